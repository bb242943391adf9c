-- How many samples each rule (and stage) of a selection dropped, with the commonest reason.
-- Parameters: $selection: a selection name (reads selections/dropped/NAME.parquet).
-- Output: rule, stage, dropped, reason (the most frequent), in the order the rules ran.
SELECT rule, stage, count(*) AS dropped, mode(reason) AS reason
FROM read_parquet('selections/dropped/' || $selection || '.parquet', file_row_number = true)
GROUP BY rule, stage
ORDER BY min(file_row_number);
