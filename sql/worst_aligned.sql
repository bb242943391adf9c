-- The worst-aligned pairs: the samples whose caption least matches their image.
-- Parameters: $column (default clip_score): a score column of `pairs` (low = bad);
--             $n (default 20): how many rows.
-- Output: sample_id, key, source, caption, score (lowest first; unscored samples left out).
SELECT sample_id, key, source, caption, p[$column] AS score
FROM pairs AS p
WHERE p[$column] IS NOT NULL
ORDER BY score ASC, sample_id
LIMIT $n;
