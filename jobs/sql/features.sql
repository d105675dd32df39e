-- The activity any window or streak of the rows being written can reach: the windows here and the
-- streak (long_features.sql) join this, not every day read to find the scope and the islands.
CREATE OR REPLACE TEMP TABLE recent_activity AS
SELECT * FROM daily_activity WHERE day >= $out_from::DATE - {recent_days};

-- Daily feature rows: partition date D summarises days [D - w, D - 1] (strictly before D).
-- A window is a sum over the user's active days in it (an idle day adds nothing), so the work grows
-- with the active days near the dates being built, not with every day of every user in scope.
-- Only days of the row's own activity island count: islands are what scope_grid cuts, and a
-- window never reaches into an earlier one.
CREATE OR REPLACE TEMP TABLE feature_rows AS
WITH out_keys AS (
    SELECT user_id, date, island_from FROM scope_grid WHERE date >= $out_from::DATE
),
activity_windows AS (
    SELECT k.user_id, k.date,
{activity_window_columns}
    FROM out_keys k
    JOIN recent_activity a
      ON a.user_id = k.user_id AND a.day >= k.date - {max_window} AND a.day < k.date AND a.day >= k.island_from
    GROUP BY k.user_id, k.date
),
payment_windows AS (
    SELECT k.user_id, k.date,
{payment_window_columns}
    FROM out_keys k
    JOIN daily_payments p
      ON p.user_id = k.user_id AND p.day >= k.date - {payment_window} AND p.day < k.date AND p.day >= k.island_from
    GROUP BY k.user_id, k.date
),
windowed AS (
    SELECT k.user_id, k.date,
{window_columns}
    FROM out_keys k
    LEFT JOIN activity_windows a ON a.user_id = k.user_id AND a.date = k.date
    LEFT JOIN payment_windows p ON p.user_id = k.user_id AND p.date = k.date
),
last_activity AS (
    -- latest activity and login strictly before the row date within the user's current island
    -- (as far as the events read reach): ASOF joins, so the grid needs to reach back only as far
    -- as the longest window, not to the start of the island
    SELECT g.user_id, g.date,
           CASE WHEN a.day >= g.island_from THEN a.last_event_ts END AS last_event_ts,
           CASE WHEN l.day >= g.island_from THEN l.last_login_ts END AS last_login_ts
    FROM out_keys g
    ASOF LEFT JOIN daily_activity a ON a.user_id = g.user_id AND g.date > a.day
    ASOF LEFT JOIN (SELECT user_id, day, last_login_ts FROM daily_activity WHERE last_login_ts IS NOT NULL) l
        ON l.user_id = g.user_id AND g.date > l.day
),
last_payment AS (
    -- latest payment strictly before the row date, however old: an ASOF join, not a range join
    SELECT g.user_id, g.date, p.last_payment_ts
    FROM (SELECT user_id, date FROM out_keys) g
    ASOF LEFT JOIN daily_payments p ON p.user_id = g.user_id AND g.date > p.day
)
SELECT
    w.user_id,
    CAST(w.date AS TIMESTAMPTZ)                                   AS event_timestamp,
    $created::TIMESTAMPTZ                                         AS created,
    w.date,
{select_columns}
    active_days_7d - (active_days_14d - active_days_7d)          AS active_days_trend_7d,
    minutes_7d - (minutes_14d - minutes_7d)                      AS minutes_trend_7d,
    {days_since_last_activity} AS days_since_last_activity,
    {days_since_last_login} AS days_since_last_login,
    {days_since_last_payment} AS days_since_last_payment,
    payments_succeeded_30d, payments_failed_30d, payments_refunded_30d,
    amount_succeeded_30d, amount_failed_30d,
    CASE WHEN payments_succeeded_30d + payments_failed_30d = 0 THEN 0.0
         ELSE payments_failed_30d / (payments_succeeded_30d + payments_failed_30d) END AS failed_payment_ratio_30d,
    u.plan, u.country, u.acquisition_channel, u.device,
    CAST(date_diff('day', CAST(u.signup_ts AS DATE), w.date) AS BIGINT) AS tenure_days
FROM windowed w
JOIN {users} u USING (user_id)
LEFT JOIN last_activity la ON la.user_id = w.user_id AND la.date = w.date
LEFT JOIN last_payment lp ON lp.user_id = w.user_id AND lp.date = w.date
WHERE w.date >= $out_from::DATE;
