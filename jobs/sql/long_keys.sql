-- Integer keys for the rows being built and the ledgers restricted to their users: the ASOF
-- lookups of long_features.sql sort by user once per lookup, and integers sort much faster than ids.
CREATE OR REPLACE TEMP TABLE user_keys AS
SELECT user_id, CAST(row_number() OVER (ORDER BY user_id) AS INTEGER) AS uid
FROM (SELECT DISTINCT user_id FROM feature_rows);

CREATE OR REPLACE TEMP TABLE long_keys AS
SELECT u.uid, f.user_id, f.date, f.event_timestamp, f.created
FROM feature_rows f JOIN user_keys u USING (user_id);

CREATE OR REPLACE TEMP TABLE activity_totals AS
SELECT u.uid, l.day, {activity_columns} FROM activity_ledger l JOIN user_keys u USING (user_id);

CREATE OR REPLACE TEMP TABLE payment_totals AS
SELECT u.uid, l.day, l.succeeded, l.failed, l.refunded, l.spend, l.last_failed_ts
FROM payment_ledger l JOIN user_keys u USING (user_id);
