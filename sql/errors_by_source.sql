-- What failed at ingest, per source file and error code.
-- Parameters: none. Output: source, code, n (largest first).
SELECT source,
       split_part(e, ':', 1) AS code,
       count(*) AS n
FROM (SELECT source, unnest(string_split(error, '; ')) AS e FROM samples WHERE status = 'failed')
GROUP BY ALL
ORDER BY n DESC, source, code;
