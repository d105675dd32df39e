-- One row per user and day with activity: the building block of every rolling window and of the
-- running totals. Reads only the event partitions the requested dates need (windows + scope), or
-- every partition when no stored running totals can stand in for the older ones.
-- Every event counts in `activity` and makes the day active; typed counts take their type only
-- (a generic `activity` event is in none of them). Minutes are exact decimals, so sums do not depend
-- on the order DuckDB adds them in (a full and an incremental build must agree to the last bit).
CREATE OR REPLACE TEMP TABLE daily_activity AS
SELECT
    user_id,
    {event_day} AS day,
    count(*)                                                AS activity,
    count(*) FILTER (WHERE event_type = 'login')            AS logins,
    coalesce(sum(TRY_CAST(minutes AS DECIMAL(38, 6))), 0)   AS minutes,
    count(*) FILTER (WHERE event_type = 'course_view')      AS course_views,
    count(*) FILTER (WHERE event_type = 'quiz_attempt')     AS quiz_attempts,
    count(*) FILTER (WHERE event_type = 'course_complete')  AS completions,
    max(event_ts)                                           AS last_event_ts,
    max(event_ts) FILTER (WHERE event_type = 'login')       AS last_login_ts
FROM {events}
WHERE event_ts >= $read_from::TIMESTAMPTZ AND event_ts < $end_date::TIMESTAMPTZ
GROUP BY ALL;
