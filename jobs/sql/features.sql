-- Daily feature rows: partition date D summarises days [D - w, D - 1] (strictly before D).
-- The grid is dense within an activity island, so ROWS windows partitioned by island are exact
-- day windows (and much cheaper than RANGE frames).
CREATE OR REPLACE TEMP TABLE feature_rows AS
WITH joined AS (
    SELECT g.user_id, g.island, g.date,
           CASE WHEN a.user_id IS NULL THEN 0 ELSE 1 END AS active,
           coalesce(a.logins, 0) AS logins, coalesce(a.minutes, 0) AS minutes,
           coalesce(a.course_views, 0) AS course_views, coalesce(a.quiz_attempts, 0) AS quiz_attempts,
           coalesce(a.completions, 0) AS completions,
           coalesce(p.n_succeeded, 0) AS n_succeeded, coalesce(p.n_failed, 0) AS n_failed,
           coalesce(p.n_refunded, 0) AS n_refunded, coalesce(p.amt_succeeded, 0) AS amt_succeeded,
           coalesce(p.amt_failed, 0) AS amt_failed
    FROM scope_grid g
    LEFT JOIN daily_activity a ON a.user_id = g.user_id AND a.day = g.date - 1
    LEFT JOIN daily_payments p ON p.user_id = g.user_id AND p.day = g.date - 1
),
windowed AS (
    SELECT user_id, date,
{window_columns}
    FROM joined
    WINDOW
{window_defs}
),
out_keys AS (
    SELECT user_id, date, island_from FROM scope_grid WHERE date >= $out_from::DATE
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
