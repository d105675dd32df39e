-- Running totals carried over from the stored `history` rows before the first date being built,
-- so an incremental build never reads old raw events. Only the rows right after an active day
-- (days_since_last_active_day = 1) are kept: those are exactly the points where a total changes,
-- one per active day, holding the totals through that day.
CREATE OR REPLACE TEMP TABLE carried_totals AS
SELECT
    user_id,
    {row_day} - 1 AS day,
{carried_columns}
FROM {history}
WHERE days_since_last_active_day = 1;
