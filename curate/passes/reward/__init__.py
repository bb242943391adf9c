"""Reward-model scores of image-text pairs (algorithms.md section 4), one backend per run.

- ``hps``: HPSv2 / v2.1 through open_clip (4.2): ``reward_raw = cos``, ``reward = 100 * cos``.
- ``pickscore``: transformers CLIP (4.3): ``reward = exp(logit_scale) * cos``, ``reward_raw =
  cos``.
- ``imagereward``: the ImageReward package (4.4): ``reward = (r - 0.16717) / 1.03334``,
  ``reward_raw = r``.
- ``composite``: VLRM-style (4.5) ``reward = sum_i w_i * z_i`` of z-scored score columns.

Scores from different backends or checkpoints are not comparable (section 0): the manifest
records which. The backends live in this package; pickscore and imagereward need
``pip install 'curate[rewards]'`` (ImageReward its own install).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from curate.errors import CurateError
from curate.passes import Batch, Inputs, Pass, register
from curate.passes.reward import composite, hps, imagereward, pickscore
from curate.workspace import Workspace

BACKENDS: dict[str, ModuleType] = {"hps": hps, "pickscore": pickscore,
                                   "imagereward": imagereward, "composite": composite}


@dataclass(frozen=True)
class Params:
    backend: str = "composite"
    checkpoint: str | None = None
    arch: str = "ViT-H-14"
    components: tuple[str, ...] = ("clip_score.clip_score",)
    weights: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        """Reject an unknown backend or unpaired composite weights before any work."""
        if self.backend not in BACKENDS:
            raise CurateError(f"unknown reward backend {self.backend!r}; backends: "
                              f"{', '.join(BACKENDS)}")
        if self.backend == "composite":
            composite.validate(self)


def compute(batch: Batch, p: Params, state: Any) -> dict[str, Any]:
    """``reward`` and ``reward_raw`` from the chosen backend (algorithms.md section 4)."""
    return BACKENDS[p.backend].compute(batch, p, state)


def prepare(ws: Workspace, p: Params) -> tuple[Any, dict]:
    """Check and load the backend once (embeddings, model, or z-score statistics)."""
    return BACKENDS[p.backend].prepare(ws, p)


def inputs(p: Params) -> Inputs:
    return BACKENDS[p.backend].inputs(p)


register(Pass(name="reward", params=Params, columns=("reward", "reward_raw"), compute=compute,
              inputs=inputs, prepare=prepare,
              description="reward models: hps (100*cos), pickscore (exp(s)*cos), imagereward "
                          "(z of r), composite (sum of w * z-scored score columns; default "
                          "clip_score)"))
