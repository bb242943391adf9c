"""curate: a notebook-first workbench for curating image-text pair datasets.

The public verbs: ``synth``, ``ingest``, ``add_captions``, ``caption``, ``embed``, ``score``,
``info``. Heavy libraries (torch,
open_clip) load only when a verb that needs them runs.
"""

__version__ = "0.1.0"

from curate.errors import CurateError
from curate.info import info
from curate.ingest import ingest
from curate.ingest.captions import add_captions
from curate.passes.caption import caption
from curate.passes.concreteness.backends import concreteness
from curate.passes.embed import embed
from curate.passes.score import score
from curate.sql import connect
from curate.synth import make_pool as synth
from curate.workspace import Workspace

__all__ = ["CurateError", "Workspace", "__version__", "add_captions", "caption", "concreteness",
           "connect", "embed", "info", "ingest", "score", "synth"]
