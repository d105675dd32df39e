-- Long-run feature rows (views history, rhythm, payment_history), one per row of feature_rows, so
-- every view has the same users and dates. Row D summarises days before D only: every lookup into
-- the ledgers is "last entry with day < D" (lifetime) or "day < D - w" (the totals before a window),
-- and a window [D - w, D - 1] is the difference of the two. An idle user's windows therefore decay
-- day by day while the lifetime totals stay put, whether the user is in scope or returns after
-- months away.
CREATE OR REPLACE TEMP TABLE long_rows AS
WITH first_active AS (
    SELECT uid, min(day) AS first_day FROM activity_totals GROUP BY uid
),
streak_bits AS (
    -- the grid row of D carries day D - 1; each active day sets bit (epoch day mod 64), and a
    -- frame of {streak_days} days sets at most {streak_days} neighbouring bits of the 64 (read circularly)
    SELECT g.user_id, g.date, CAST(g.date - DATE '1970-01-01' AS BIGINT) AS day_number,
           CASE WHEN a.user_id IS NULL THEN CAST(0 AS UBIGINT)
                ELSE CAST(1 AS UBIGINT) << CAST((g.date - 1 - DATE '1970-01-01') % 64 AS INTEGER) END AS bit
    FROM scope_grid g
    LEFT JOIN daily_activity a ON a.user_id = g.user_id AND a.day = g.date - 1
    WHERE g.date >= $streak_from::DATE
),
streaks AS (
    SELECT user_id, date,
           CAST(bit_or(bit) OVER (PARTITION BY user_id ORDER BY day_number
                                  RANGE BETWEEN {streak_frame} PRECEDING AND CURRENT ROW) AS UBIGINT) AS mask
    FROM streak_bits
),
streak_lengths AS (
    -- longest run of set bits in the circular mask, by binary lifting over shifted copies
    SELECT user_id, date, longest_streak FROM ({streak_lengths})
),
payments_before AS (
    -- payment totals only grow, so the totals before a day are the largest ones before it; a
    -- user's payment days are few, so a join beats one ASOF lookup per window
    SELECT k.uid, k.date,
{payment_columns}
    FROM long_keys k
    JOIN payment_totals pt ON pt.uid = k.uid AND pt.day < k.date
    GROUP BY k.uid, k.date
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
    CAST(date - first_day AS BIGINT)                                    AS days_since_first_active_day,
    CAST(date - last_active_day AS BIGINT)                              AS days_since_last_active_day,
    CASE WHEN active_days_so_far >= 2
         THEN CAST(last_active_day - first_day AS DOUBLE) / (active_days_so_far - 1) END AS typical_gap_days,
    CASE WHEN active_days_so_far >= 2
         THEN CAST(date - last_active_day AS DOUBLE) * (active_days_so_far - 1) / (last_active_day - first_day)
         END                                                            AS overdue_ratio,
    CAST(coalesce(longest_streak, 0) AS BIGINT)                         AS longest_streak_{streak_days}d,
{ratio_columns}
    CAST(coalesce(succeeded, 0) AS BIGINT)                              AS payments_succeeded_lifetime,
    CAST(coalesce(failed, 0) AS BIGINT)                                 AS payments_failed_lifetime,
    CAST(coalesce(refunded, 0) AS BIGINT)                               AS payments_refunded_lifetime,
    CASE WHEN coalesce(succeeded, 0) + coalesce(failed, 0) > 0
         THEN CAST(failed AS DOUBLE) / (succeeded + failed) END         AS failed_payment_ratio_lifetime,
    round(epoch(CAST(date AS TIMESTAMPTZ) - last_failed_ts) / 86400, 4) AS days_since_last_failed_payment
FROM totals;
