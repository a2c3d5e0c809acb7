-- Every write of a queued message raises its revision. A write computed
-- from a message read earlier (an administrator's hold, retry or delete;
-- an attempt's outcome) names the revision it read and is refused when
-- the row moved on since: the writer reads the message again and makes
-- its change on top, so neither an action taken on one node nor an
-- outcome written by another is lost.
ALTER TABLE spool_message ADD COLUMN revision bigint NOT NULL DEFAULT 0;
