-- Per user and active day, the running totals through that day: totals carried over from the
-- stored rows, then the days read from raw events ($fresh_from on) added on top of each user's
-- last carried totals. "Totals strictly before D" is then an ASOF lookup of the last entry with
-- day < D, and a window [D - w, D - 1] is the difference of two such lookups.
CREATE OR REPLACE TEMP TABLE activity_ledger AS
WITH base AS (
    -- totals only grow, so a user's last carried totals are their maxima
    SELECT user_id,
{base_columns}
    FROM carried_totals GROUP BY user_id
),
fresh AS (
    SELECT a.user_id, a.day,
{fresh_columns}
    FROM daily_activity a
    LEFT JOIN base b ON b.user_id = a.user_id
    WHERE a.day >= $fresh_from::DATE
    WINDOW w AS (PARTITION BY a.user_id ORDER BY a.day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
SELECT * FROM carried_totals
UNION ALL
SELECT * FROM fresh;
