"""How embed splits CPU cores between decode workers and the model (curate.passes.threads),
against the bounds computed by hand."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from curate.passes.threads import plan, rate


def test_a_compute_bound_model_gets_every_core() -> None:
    # issue 21's ViT-B-32 on two cores: decoding 50x cheaper than the model. No worker:
    # 1 / (d + 50d / 2) = 1 / 26d; one worker and one thread: min(1/d, 1/50d, 2/51d) = 1/50d
    d = 0.002
    assert rate(0, d, 50 * d, 2) == pytest.approx(1 / (26 * d))
    assert rate(1, d, 50 * d, 2) == pytest.approx(1 / (50 * d))
    assert plan(d, 50 * d, 2) == (0, 2)
    # on 16 cores one worker pays: min(1/d, 15/50d, 16/51d) = 0.3/d > 1 / (d + 50d/16)
    assert plan(d, 50 * d, 16) == (1, 15)


def test_a_cheap_model_keeps_decoders_beside_it() -> None:
    # decoding as dear as the model: no worker 1 / 1.5d; one worker min(1/d, 1/d, 1/d) = 1/d
    d = 0.01
    assert rate(0, d, d, 2) == pytest.approx(1 / (1.5 * d))
    assert plan(d, d, 2) == (1, 1)
    # decoding 3x the model on 8 cores: 6 workers (6/3d) and 2 threads (2/d) balance
    assert plan(3 * d, d, 8) == (6, 2)
    assert rate(6, 3 * d, d, 8) == pytest.approx(2 / d)


def test_embed_measures_its_split(ingested: Path) -> None:
    from curate import models
    from curate.passes.embed import cpu_plan
    from curate.workspace import Workspace
    cores = os.cpu_count() or 1
    workers, threads = cpu_plan(Workspace.open(ingested), models.load("tiny-clip", "cpu"),
                                cores)
    assert 0 <= workers <= cores and threads == max(1, cores - workers)
