"""Short cluster labels from caption words: the words a cluster's captions use far more often
than the pool's (document frequency times log lift, as c-TF-IDF does), stop words removed."""

from __future__ import annotations

import math

import duckdb
import pyarrow as pa

STOP_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into is it
its itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves
one two three via like get got its it's im i'm dont don't s t
""".split())


def cluster_labels(table: pa.Table, top: int = 3, min_share: float = 0.05) -> dict[int, dict]:
    """``{cluster: {"size", "label", "words"}}`` from a table of ``cluster`` and ``caption``.

    A word's score in a cluster is ``p * log(p / q)``: ``p`` the share of the cluster's
    captions that use it, ``q`` the share of all captions; words in under ``min_share`` of
    the cluster's captions, stop words and words every cluster uses equally score nothing."""
    con = duckdb.connect()
    con.register("t", table.select(["cluster", "caption"]))
    con.register("stop", pa.table({"word": sorted(STOP_WORDS)}))
    sizes = dict(con.execute("SELECT cluster, count(*) FROM t GROUP BY 1").fetchall())
    rows = con.execute(r"""
        WITH docs AS (SELECT cluster, row_number() OVER () AS doc,
                             coalesce(lower(caption), '') AS text FROM t),
             words AS (SELECT DISTINCT cluster, doc,
                              unnest(regexp_extract_all(text, '[a-z][a-z0-9]+')) AS word
                       FROM docs)
        SELECT cluster, word, count(*) AS n FROM words
        WHERE word NOT IN (SELECT word FROM stop)
        GROUP BY ALL""").fetchall()
    con.close()
    total = sum(sizes.values())
    df: dict[str, int] = {}
    for _, word, n in rows:
        df[word] = df.get(word, 0) + n
    scored: dict[int, list[tuple[float, str]]] = {c: [] for c in sizes}
    for c, word, n in rows:
        p, q = n / sizes[c], df[word] / total
        if p >= min_share and p > q:
            scored[c].append((p * math.log(p / q), word))
    out = {}
    for c, size in sizes.items():
        words = [w for _, w in sorted(scored[c], key=lambda t: (-t[0], t[1]))[:top]]
        out[int(c)] = {"size": int(size), "words": words,
                       "label": " ".join(words) if words else f"cluster {c}"}
    return out
