"""Maps: UMAP layouts of embeddings at scale, clusters with caption-word labels, datashader
rendering, and the helpers the explore notebook uses (brushes, thumbnails, rule counts)."""

from curate.maps.brush import save_brush
from curate.maps.frames import catalog, check_map, load_points
from curate.maps.io import list_maps, make_map, read_manifest
from curate.maps.layout import MapParams
from curate.maps.render import render_map

__all__ = ["MapParams", "catalog", "check_map", "list_maps", "load_points", "make_map",
           "read_manifest", "render_map", "save_brush"]
