-- The shared spool as the queue works it: a message is the unit a node
-- claims, under a lease on its row, and the row carries the due index
-- and the counters the queue reads. The per-recipient rows of migration 2
-- were never written; a message's recipients are worked together, by the
-- node that holds the message's lease.
DROP TABLE spool_recipient;

ALTER TABLE spool_message
    -- Earliest due time of its waiting recipients; NULL when held or
    -- nothing waits (the due index).
    ADD COLUMN due_at_ms bigint,
    -- Destinations of its waiting recipients (per-destination state).
    ADD COLUMN destinations json NOT NULL DEFAULT '[]',
    -- queued | deferred | held: the depth counters.
    ADD COLUMN status text NOT NULL DEFAULT 'queued',
    -- Waiting recipients per domain, [[domain, count], ...]: queue summary.
    ADD COLUMN shape json NOT NULL DEFAULT '[]',
    -- A claim sets the owner and expiry and raises the fence; an outcome
    -- is written only under the fence it was claimed with, so a node whose
    -- lease lapsed and was taken over cannot overwrite the new owner's.
    ADD COLUMN lease_owner text,
    ADD COLUMN lease_expires_at_ms bigint,
    ADD COLUMN fence bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT spool_message_lease CHECK ((lease_owner IS NULL) = (lease_expires_at_ms IS NULL));

CREATE INDEX spool_message_due ON spool_message (due_at_ms, id) WHERE due_at_ms IS NOT NULL;
CREATE INDEX spool_message_leased ON spool_message (lease_owner) WHERE lease_owner IS NOT NULL;
