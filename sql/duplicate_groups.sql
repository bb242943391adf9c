-- Duplicate groups a selection's dedup rules found, each with the representative it kept.
-- Parameters: $selection: a selection name (its drop log: drop_log($selection)).
-- Output: group_id, stage (exact, perceptual, semantic or semdedup), representative and its
-- caption, size (the representative plus the dropped), and the dropped sample ids and captions
-- (largest groups first).
WITH d AS (
    SELECT * FROM drop_log($selection)
    WHERE group_id IS NOT NULL)
SELECT d.group_id,
       any_value(d.stage) AS stage,
       d.representative,
       any_value(r.caption) AS representative_caption,
       count(*) + 1 AS size,
       list(d.sample_id ORDER BY d.sample_id) AS dropped,
       list(s.caption ORDER BY d.sample_id) AS dropped_captions
FROM d
LEFT JOIN samples AS r ON r.sample_id = d.representative
LEFT JOIN samples AS s ON s.sample_id = d.sample_id
GROUP BY d.group_id, d.representative
ORDER BY size DESC, d.group_id;
