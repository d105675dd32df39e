-- One row per user and day with activity: the building block of every rolling window.
-- Reads only the event partitions the requested dates need (windows + scope).
CREATE OR REPLACE TEMP TABLE daily_activity AS
SELECT
    user_id,
    CAST(event_ts AS DATE)                                  AS day,
    count(*) FILTER (WHERE event_type = 'login')            AS logins,
    coalesce(sum(minutes), 0)::DOUBLE                       AS minutes,
    count(*) FILTER (WHERE event_type = 'course_view')      AS course_views,
    count(*) FILTER (WHERE event_type = 'quiz_attempt')     AS quiz_attempts,
    count(*) FILTER (WHERE event_type = 'course_complete')  AS completions,
    max(event_ts)                                           AS last_event_ts,
    max(event_ts) FILTER (WHERE event_type = 'login')       AS last_login_ts
FROM read_parquet([{events}], hive_partitioning = false)
WHERE event_ts >= $read_from::TIMESTAMPTZ AND event_ts < $end_date::TIMESTAMPTZ
GROUP BY ALL;
