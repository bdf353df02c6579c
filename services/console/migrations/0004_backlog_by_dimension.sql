-- The backlog and overdue counts of one service, channel, typology or
-- site are ranges of these indexes (status, the dimension, the earlier
-- deadline) instead of a read of every unclosed request's row to test its
-- dimension: with 100,000 unclosed requests that read was most of a
-- filtered overview's time. Replaces requests_status (status, service).
DROP INDEX requests_status;
CREATE INDEX requests_backlog_service ON requests (status, service, overdue_at);
CREATE INDEX requests_backlog_channel ON requests (status, channel, overdue_at);
CREATE INDEX requests_backlog_typology ON requests (status, typology, overdue_at);
CREATE INDEX requests_backlog_site ON requests (status, site, overdue_at);
