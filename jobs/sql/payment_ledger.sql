-- Per user and payment day, running payment totals and the latest failure so far. Payments are
-- read in full (see daily_payments.sql), so this ledger needs no carry-over.
CREATE OR REPLACE TEMP TABLE payment_ledger AS
SELECT user_id, day,
       CAST(sum(n_succeeded) OVER w AS BIGINT) AS succeeded,
       CAST(sum(n_failed) OVER w AS BIGINT)    AS failed,
       CAST(sum(n_refunded) OVER w AS BIGINT)  AS refunded,
       sum(amt_succeeded) OVER w AS spend,
       max(last_failed_ts) OVER w AS last_failed_ts
FROM daily_payments
WINDOW w AS (PARTITION BY user_id ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW);
