-- Caption length by source file: where short, empty or overlong captions come from.
-- Parameters: none.
-- Output: source, n, empty (null or blank captions), mean/median/p90 characters, mean words.
SELECT source,
       count(*) AS n,
       count(*) FILTER (caption IS NULL OR trim(caption) = '') AS empty,
       round(avg(length(caption)), 1) AS mean_chars,
       median(length(caption)) AS median_chars,
       quantile_cont(length(caption), 0.9) AS p90_chars,
       round(avg(len(string_split(trim(caption), ' '))), 1) AS mean_words
FROM samples
GROUP BY source
ORDER BY source;
