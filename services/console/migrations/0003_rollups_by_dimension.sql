-- The overview reads its aggregates at the grain it shows them: one row
-- per (period, single dimension value) instead of one per combination of
-- service × channel × typology × site, and delay histograms per month
-- too, so a year is a few tens of thousands of rows whatever the volume.
-- `dimension` is '' (everything, `member` '') or service, channel,
-- typology, site. Replaces delays_all and delays_service (dimension ''
-- and 'service' of delays_by_day). The projection fills them from the
-- next message on: a read model from before this migration is brought up
-- to date by `guichet indicators rebuild`.
DROP TABLE delays_all;
DROP TABLE delays_service;

CREATE TABLE totals_by (
    dimension TEXT NOT NULL,
    member TEXT NOT NULL,
    day BIGINT NOT NULL,
    received BIGINT NOT NULL,
    manual BIGINT NOT NULL,
    closed BIGINT NOT NULL,
    answered BIGINT NOT NULL,
    recontacts BIGINT NOT NULL,
    transfers_in BIGINT NOT NULL,
    transfers_out BIGINT NOT NULL,
    reopenings BIGINT NOT NULL,
    within_engagement BIGINT NOT NULL,
    with_engagement BIGINT NOT NULL,
    within_legal BIGINT NOT NULL,
    with_legal BIGINT NOT NULL,
    PRIMARY KEY (dimension, member, day)
);

-- `n` requests reached `metric` after `value` hours or business days, on
-- `day` (delays_by_day) or in the month starting on day number `month`.
CREATE TABLE delays_by_day (
    dimension TEXT NOT NULL,
    member TEXT NOT NULL,
    day BIGINT NOT NULL,
    metric TEXT NOT NULL,
    value BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (dimension, member, day, metric, value)
);

CREATE TABLE delays_by_month (
    dimension TEXT NOT NULL,
    member TEXT NOT NULL,
    month BIGINT NOT NULL,
    metric TEXT NOT NULL,
    value BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (dimension, member, month, metric, value)
);

-- The earlier of a request's two deadlines, indexed with the status: the
-- overdue count is a range of this index instead of a read of every
-- unclosed request's row.
ALTER TABLE requests ADD COLUMN overdue_at BIGINT;
CREATE INDEX requests_overdue ON requests (status, overdue_at);
