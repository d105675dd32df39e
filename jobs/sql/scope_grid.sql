-- Every (user, date) that gets a feature row: the user signed up before the date and was active
-- (or signed up) within the previous scope_days days. Writing rows for idle users too is what
-- makes windows and recency decay: a user idle since Monday must look idle on Friday.
-- Activity islands (runs of activity with gaps <= scope) each cover the dates
-- (first day, last day + scope], clipped to the requested dates; a row's island bounds what its
-- windows sum (features.sql).
CREATE OR REPLACE TEMP TABLE scope_grid AS
WITH anchors AS (
    SELECT user_id, day FROM daily_activity
    UNION
    SELECT user_id, CAST(signup_ts AS DATE) FROM {users}
    WHERE signup_ts < $end_date::TIMESTAMPTZ
),
marked AS (
    SELECT user_id, day,
           CASE WHEN date_diff('day', lag(day) OVER (PARTITION BY user_id ORDER BY day), day) <= {scope_days}
                THEN 0 ELSE 1 END AS new_island
    FROM anchors
),
islands AS (
    SELECT user_id, day, sum(new_island) OVER (PARTITION BY user_id ORDER BY day) AS island
    FROM marked
),
spans AS (
    SELECT user_id, island, min(day) AS island_from,
           greatest(min(day) + 1, $grid_from::DATE)                                   AS span_from,
           least(max(day) + {scope_days}, $end_date::DATE)                        AS span_to
    FROM islands GROUP BY user_id, island
)
SELECT user_id, island, island_from, span_from + CAST(day_offset AS INTEGER) AS date
FROM (
    SELECT user_id, island, island_from, span_from,
           unnest(generate_series(0, CAST(date_diff('day', span_from, span_to) AS INTEGER))) AS day_offset
    FROM spans WHERE span_from <= span_to
);
