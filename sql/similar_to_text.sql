-- The samples whose image is most like a phrase:
--     curate sql -w ws similar_to_text --text "a red circle" [--model tiny-clip]
-- Parameters: $text_emb and $embeddings, bound by --text (the phrase's embedding and the
--             view of the model's embeddings); $n (default 20): how many rows.
-- Output: sample_id, caption, similarity (cosine, highest first).
SELECT e.sample_id, s.caption, array_cosine_similarity(e.image_emb, $text_emb) AS similarity
FROM query_table($embeddings) AS e
JOIN samples AS s USING (sample_id)
WHERE e.image_emb IS NOT NULL
ORDER BY similarity DESC, e.sample_id
LIMIT $n;
