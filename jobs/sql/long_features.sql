-- Long-run feature rows (views history, rhythm, payment_history), one per row of feature_rows, so
-- every view has the same users and dates. Row D summarises days before D only: every lookup into
-- the ledgers is "last entry with day < D" (lifetime) or "day < D - w" (the totals before a window),
-- and a window [D - w, D - 1] is the difference of the two. An idle user's windows therefore decay
-- day by day while the lifetime totals stay put, whether the user is in scope or returns after
-- months away.
--
-- Each part is its own table: a query with every part inlined is one plan, and Spark re-plans
-- all of it after each of its many small stages.
CREATE OR REPLACE TEMP TABLE streak_lengths AS
WITH streaks AS (
    -- each active day d sets bit (epoch day of d mod {streak_period}); the {streak_days} days before
    -- a row set at most {streak_days} neighbouring bits of the {streak_period} (read circularly): a
    -- signed 64-bit mask, doubled, still has its top bit clear
    SELECT k.user_id, k.date,
           CAST(bit_or(CAST(1 AS BIGINT) << CAST(date_diff('day', DATE '1970-01-01', a.day) % {streak_period} AS INTEGER))
                AS BIGINT) AS mask
    FROM (SELECT user_id, date FROM feature_rows) k
    JOIN recent_activity a ON a.user_id = k.user_id AND a.day >= k.date - {streak_days} AND a.day < k.date
    GROUP BY k.user_id, k.date
)
-- longest run of set bits in the circular mask, by binary lifting over shifted copies
SELECT user_id, date, longest_streak FROM ({streak_lengths});

-- Payment totals only grow, so the totals before a day are the largest ones before it; a user's
-- payment days are few, so a join beats one ASOF lookup per window.
CREATE OR REPLACE TEMP TABLE payments_before AS
SELECT k.uid, k.date,
{payment_columns}
FROM long_keys k
JOIN payment_totals pt ON pt.uid = k.uid AND pt.day < k.date
GROUP BY k.uid, k.date;

CREATE OR REPLACE TEMP TABLE long_rows AS
WITH first_active AS (
    SELECT uid, min(day) AS first_day FROM activity_totals GROUP BY uid
),
totals AS (
    SELECT k.user_id, k.date, k.event_timestamp, k.created,
           -- the first active day only once it is in the past: the ledger also holds later days
           n.day AS last_active_day, CASE WHEN n.day IS NOT NULL THEN f.first_day END AS first_day,
           n.active_days AS active_days_so_far, s.longest_streak,
           p.succeeded, p.failed, p.refunded, p.last_failed_ts,
{total_columns}
    FROM long_keys k
    ASOF LEFT JOIN activity_totals n ON n.uid = k.uid AND n.day < k.date
    LEFT JOIN payments_before p ON p.uid = k.uid AND p.date = k.date
{lookback_joins}
    LEFT JOIN first_active f ON f.uid = k.uid
    LEFT JOIN streak_lengths s ON s.user_id = k.user_id AND s.date = k.date
)
SELECT
    user_id, event_timestamp, created, date,
{history_columns}
    CAST(date_diff('day', first_day, date) AS BIGINT)                   AS days_since_first_active_day,
    CAST(date_diff('day', last_active_day, date) AS BIGINT)             AS days_since_last_active_day,
    CASE WHEN active_days_so_far >= 2
         THEN CAST(date_diff('day', first_day, last_active_day) AS DOUBLE) / (active_days_so_far - 1) END AS typical_gap_days,
    CASE WHEN active_days_so_far >= 2
         THEN CAST(date_diff('day', last_active_day, date) AS DOUBLE) * (active_days_so_far - 1)
              / date_diff('day', first_day, last_active_day)
         END                                                            AS overdue_ratio,
    CAST(coalesce(longest_streak, 0) AS BIGINT)                         AS longest_streak_{streak_days}d,
{ratio_columns}
    CAST(coalesce(succeeded, 0) AS BIGINT)                              AS payments_succeeded_lifetime,
    CAST(coalesce(failed, 0) AS BIGINT)                                 AS payments_failed_lifetime,
    CAST(coalesce(refunded, 0) AS BIGINT)                               AS payments_refunded_lifetime,
    CASE WHEN coalesce(succeeded, 0) + coalesce(failed, 0) > 0
         THEN CAST(failed AS DOUBLE) / (succeeded + failed) END         AS failed_payment_ratio_lifetime,
    {days_since_last_failed_payment} AS days_since_last_failed_payment
FROM totals;
