-- Roll-ups of daily_delays, so the overview reads a few hundred thousand
-- rows a year instead of millions: all dimensions summed (the overview
-- without filter), and by service only (a service's page).
CREATE TABLE delays_all (
    day BIGINT NOT NULL,
    metric TEXT NOT NULL,
    value BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (day, metric, value)
);

CREATE TABLE delays_service (
    day BIGINT NOT NULL,
    service TEXT NOT NULL,
    metric TEXT NOT NULL,
    value BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (service, day, metric, value)
);
