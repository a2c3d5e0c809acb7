-- Everything the nodes of a cluster share apart from the spool.

-- One row: the whole object set, and a counter every change raises, so a
-- node that missed a notification sees the change by comparing counters.
CREATE TABLE objects (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    doc json NOT NULL,
    version bigint NOT NULL
);

-- Ordered by (at_ms, id): id only breaks ties between events of one millisecond.
CREATE TABLE trace_event (
    id bigserial PRIMARY KEY,
    at_ms bigint NOT NULL,
    doc json NOT NULL
);
CREATE INDEX trace_event_time ON trace_event (at_ms, id);

CREATE TABLE quarantine_entry (
    id text COLLATE "C" PRIMARY KEY,
    doc json NOT NULL,
    content bytea NOT NULL
);

-- Cached MTA-STS policies, TLS-RPT counters: JSON under a key.
CREATE TABLE tls_state (
    key text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);

-- The DKIM/ARC keyring, replaced as a whole like the embedded store's.
CREATE TABLE dkim_keys (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    doc json NOT NULL
);

-- Every node sharing the database; the heartbeat is the database's clock,
-- so nodes with skewed clocks still compare.
CREATE TABLE node (
    name text COLLATE "C" PRIMARY KEY,
    smtp text NOT NULL,
    admin text NOT NULL,
    version text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
