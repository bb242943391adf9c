-- A score's distribution in each cluster of a map: which regions hold the poorly aligned pairs.
-- Parameters: $map (default default): a map name (map_points($map), from `curate map`);
--             $column (default clip_score): a numeric column of `pairs`.
-- Output: cluster, n, scored, mean, p10, median, p90 (lowest mean first).
SELECT m.cluster,
       count(*) AS n,
       count(p[$column]) AS scored,
       avg(p[$column]) AS mean,
       quantile_cont(p[$column], 0.1) AS p10,
       median(p[$column]) AS median,
       quantile_cont(p[$column], 0.9) AS p90
FROM map_points($map) AS m
JOIN pairs AS p USING (sample_id)
GROUP BY m.cluster
ORDER BY mean ASC NULLS LAST, m.cluster;
