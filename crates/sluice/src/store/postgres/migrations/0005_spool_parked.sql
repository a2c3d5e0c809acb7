-- Parked messages by destination: a message whose destination is down
-- waits for that destination's probe, not for a due time of its own, so a
-- probe that fails writes no row of it. When the destination answers its
-- waiting mail is read from here, a page at a time. Held messages are not
-- in it. Rows go with their message.
CREATE TABLE spool_parked (
    destination text COLLATE "C" NOT NULL,
    message_id text COLLATE "C" NOT NULL REFERENCES spool_message (id) ON DELETE CASCADE,
    PRIMARY KEY (destination, message_id)
);
-- For the cascade and for the writer, which replaces a message's rows.
CREATE INDEX spool_parked_message ON spool_parked (message_id);
