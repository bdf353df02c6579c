-- The console's read model: no personal data (no usager id, no text).
-- Portable SQL: the same file runs on SQLite and PostgreSQL. Times are
-- Unix seconds, days are days since 1970-01-01 in Europe/Paris.

-- Where each stream's projection stands: moved in the transaction that
-- writes the rows of the messages up to it.
CREATE TABLE positions (
    stream TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);

-- One row per request: its dimensions, milestones and current state.
CREATE TABLE requests (
    reference TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    service TEXT NOT NULL,
    channel TEXT NOT NULL,
    typology TEXT NOT NULL,
    site TEXT NOT NULL,
    manual BIGINT NOT NULL,
    opened_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    version BIGINT NOT NULL,
    engagement_due_at BIGINT,
    legal_due_at BIGINT,
    acked_at BIGINT,
    taken_at BIGINT,
    answered_at BIGINT,
    closed_at BIGINT,
    outcome TEXT,
    recontacts BIGINT NOT NULL,
    transfers BIGINT NOT NULL,
    reopenings BIGINT NOT NULL
);
CREATE INDEX requests_status ON requests (status, service);

-- Every contact routed, once (a transfer republishes the first one).
CREATE TABLE contacts (
    contact_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    reference TEXT NOT NULL,
    channel TEXT NOT NULL,
    site TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    follow_up BIGINT NOT NULL
);

-- Every request event (transitions and alerts), by its EVENTS sequence.
CREATE TABLE transitions (
    seq BIGINT PRIMARY KEY,
    reference TEXT NOT NULL,
    kind TEXT NOT NULL,
    service TEXT NOT NULL,
    from_service TEXT NOT NULL,
    from_status TEXT NOT NULL,
    to_status TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX transitions_reference ON transitions (reference);

-- Counts per day and dimensions, kept by the projection.
CREATE TABLE daily (
    day BIGINT NOT NULL,
    service TEXT NOT NULL,
    channel TEXT NOT NULL,
    typology TEXT NOT NULL,
    site TEXT NOT NULL,
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
    PRIMARY KEY (day, service, channel, typology, site)
);

-- Delay histograms per day and dimensions: `n` requests reached
-- `metric` (e.g. `take_h`, `closure_bd`) after `value` hours or business days.
CREATE TABLE daily_delays (
    day BIGINT NOT NULL,
    service TEXT NOT NULL,
    channel TEXT NOT NULL,
    typology TEXT NOT NULL,
    site TEXT NOT NULL,
    metric TEXT NOT NULL,
    value BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (day, service, channel, typology, site, metric, value)
);

CREATE TABLE dead_letters (
    seq BIGINT PRIMARY KEY,
    subject TEXT NOT NULL,
    original_subject TEXT NOT NULL,
    original_stream TEXT NOT NULL,
    original_sequence BIGINT NOT NULL,
    reason TEXT NOT NULL,
    at BIGINT NOT NULL
);

-- Identity conflicts: the contact and the usager ids (pseudonymous ids,
-- no identifier values).
CREATE TABLE identity_conflicts (
    seq BIGINT PRIMARY KEY,
    contact_id TEXT NOT NULL,
    kept TEXT NOT NULL,
    others TEXT NOT NULL,
    at BIGINT NOT NULL
);
