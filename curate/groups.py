"""Images and captions as two levels: the SQL that gives every sample its ``image_id`` and
``caption_source`` in the ``samples`` view, and the ``images`` view (one row per image).

A sample is one (image, caption) pair; its image is known by ``image_id``, the content hash
of the image bytes (``image_hash``, ``curate.hashing.image_hash``), so COCO's five captions of
one picture, a caption attached later by ``curate captions add`` and a generated caption all
share one image without any bytes copied. ``caption_source`` says where a caption came from
(``alt`` for web alt-text, ``human`` for COCO, or the name ``captions add`` was given); a part
written before the column existed gets the default of its source kind, so old workspaces read
the same. A source's own integer ``image_id`` (COCO's) is ``source_image_id``.
"""

from __future__ import annotations

# the caption source of a sample whose part has none, by source kind; any other kind: DEFAULT
KIND_SOURCES = {"coco": "human"}
DEFAULT_SOURCE = "alt"
SOURCE_IMAGE_ID = "source_image_id"  # what a source's own ``image_id`` column is called


def default_source(kind: str | None) -> str:
    """The ``caption_source`` of an ingested sample of source kind ``kind``."""
    return KIND_SOURCES.get(kind or "", DEFAULT_SOURCE)


def samples_sql(read: str, columns: set[str]) -> str:
    """The ``samples`` view over ``read`` (a ``read_parquet(...)`` of every part) whose union
    of columns is ``columns``: every column, plus ``image_id`` (the image hash) and
    ``caption_source`` (a part without it gets its source kind's default)."""
    cases = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in KIND_SOURCES.items())
    default = f"CASE source_kind {cases} ELSE '{DEFAULT_SOURCE}' END"
    source = (f"COALESCE(caption_source, {default})" if "caption_source" in columns
              else default)
    drop = [c for c in ("image_id", "caption_source", SOURCE_IMAGE_ID) if c in columns]
    extra = ""
    if "image_id" in columns:  # a part ingested before the rename: a source's own image id
        extra = (f", COALESCE({SOURCE_IMAGE_ID}, image_id) AS {SOURCE_IMAGE_ID}"
                 if SOURCE_IMAGE_ID in columns else f", image_id AS {SOURCE_IMAGE_ID}")
    elif SOURCE_IMAGE_ID in columns:
        extra = f", {SOURCE_IMAGE_ID}"
    exclude = f" EXCLUDE ({', '.join(drop)})" if drop else ""
    return (f"SELECT *{exclude}, image_hash AS image_id, {source} AS caption_source{extra} "
            f"FROM {read}")


# one row per image of the ok samples: how many captions, from which sources, and where the
# bytes are (the first sample's reference: every caption of an image points at the same bytes)
IMAGES_SQL = """
SELECT image_id, count(*) AS n_captions,
       list(DISTINCT caption_source ORDER BY caption_source) AS sources,
       first(sample_id ORDER BY ingested_at, sample_id) AS first_sample_id,
       first(image_path ORDER BY ingested_at, sample_id) AS image_path,
       first(image_offset ORDER BY ingested_at, sample_id) AS image_offset,
       first(image_length ORDER BY ingested_at, sample_id) AS image_length,
       first(image_format ORDER BY ingested_at, sample_id) AS image_format,
       first(width ORDER BY ingested_at, sample_id) AS width,
       first(height ORDER BY ingested_at, sample_id) AS height
FROM samples WHERE status = 'ok' AND image_id IS NOT NULL GROUP BY image_id
"""
