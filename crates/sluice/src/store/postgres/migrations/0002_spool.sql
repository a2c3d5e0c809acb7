-- The shared spool. A message is accepted when its envelope, content and
-- recipient rows are in one committed transaction.
CREATE TABLE spool_message (
    id text COLLATE "C" PRIMARY KEY,
    -- The node that accepted it (its SMTP session answered 250).
    accepted_by text NOT NULL,
    -- The queue entry as JSON (envelope, source, hold, expiry).
    envelope json NOT NULL,
    received_at_ms bigint NOT NULL,
    expires_at_ms bigint NOT NULL
);

CREATE TABLE spool_content (
    id text COLLATE "C" PRIMARY KEY REFERENCES spool_message (id) ON DELETE CASCADE,
    content bytea NOT NULL
);

-- One row per recipient: the unit a node claims, works and reports on.
-- A claim sets lease_owner and lease_expires_at_ms and raises fence; a
-- result is written only under the fence it was claimed with, so a node
-- whose lease expired and was taken over cannot overwrite the new owner's
-- result.
CREATE TABLE spool_recipient (
    message_id text COLLATE "C" NOT NULL REFERENCES spool_message (id) ON DELETE CASCADE,
    idx integer NOT NULL,
    address text NOT NULL,
    state text NOT NULL CHECK (state IN ('queued', 'deferred', 'delivered', 'failed', 'held')),
    due_at_ms bigint NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    route json NOT NULL,
    last_reply text,
    lease_owner text,
    lease_expires_at_ms bigint,
    fence bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, idx),
    CHECK ((lease_owner IS NULL) = (lease_expires_at_ms IS NULL))
);

-- The scheduler's index: only work still to do.
CREATE INDEX spool_recipient_due ON spool_recipient (due_at_ms)
    WHERE state IN ('queued', 'deferred');
CREATE INDEX spool_recipient_lease ON spool_recipient (lease_owner)
    WHERE lease_owner IS NOT NULL;
