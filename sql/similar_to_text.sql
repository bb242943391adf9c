-- The samples whose image is most like a phrase:
--     curate sql -w ws similar_to_text --text "a red circle" [--model tiny-clip]
-- Parameters: $text_emb and $embeddings, bound by --text (the phrase's embedding and the
--             view of the model's embeddings); $n (default 20): how many rows.
-- Reads text_neighbours (sample_id, image_emb), the $n images nearest the phrase that --text
-- registers: found through the model's index (`curate index`) when it is current, else by
-- an exact scan; the cosine is computed here from the stored vectors.
-- Output: sample_id, caption, similarity (cosine, highest first).
SELECT h.sample_id, s.caption, array_cosine_similarity(h.image_emb, $text_emb) AS similarity
FROM text_neighbours AS h
JOIN samples AS s USING (sample_id)
ORDER BY similarity DESC, h.sample_id
LIMIT $n;
