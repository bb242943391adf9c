-- How many samples each rule (and stage) of a selection dropped, with the commonest reason.
-- Parameters: $selection: a selection name (its drop log: drop_log($selection)).
-- Output: rule, stage, dropped, reason (the most frequent), in the order the rules ran.
SELECT rule, stage, count(*) AS dropped, mode(reason) AS reason
FROM drop_log($selection)
GROUP BY rule, stage
ORDER BY min(file_row_number);
