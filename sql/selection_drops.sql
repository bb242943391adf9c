-- The samples a selection dropped and why, in the order its rules ran.
-- Parameters: $selection: a selection name (its drop log: drop_log($selection)).
-- Output: rule, stage, reason, sample_id, caption, and for duplicates the group and the
-- representative kept instead.
SELECT d.rule, d.stage, d.reason, d.sample_id, s.caption, d.group_id, d.representative
FROM drop_log($selection) AS d
LEFT JOIN samples AS s USING (sample_id)
ORDER BY d.file_row_number;
