-- One row per user and day with payments. All history is read: payments are few, and the
-- last payment may be months old. Amounts are exact decimals (order-independent sums).
CREATE OR REPLACE TEMP TABLE daily_payments AS
SELECT
    user_id,
    {payment_day} AS day,
    count(*) FILTER (WHERE status = 'succeeded')                  AS n_succeeded,
    count(*) FILTER (WHERE status = 'failed')                     AS n_failed,
    count(*) FILTER (WHERE status = 'refunded')                   AS n_refunded,
    coalesce(sum(TRY_CAST(amount AS DECIMAL(38, 6))) FILTER (WHERE status = 'succeeded'), 0) AS amt_succeeded,
    coalesce(sum(TRY_CAST(amount AS DECIMAL(38, 6))) FILTER (WHERE status = 'failed'), 0)    AS amt_failed,
    max(payment_ts)                                               AS last_payment_ts,
    max(payment_ts) FILTER (WHERE status = 'failed')              AS last_failed_ts
FROM {payments}
WHERE payment_ts < $end_date::TIMESTAMPTZ
GROUP BY ALL;
