"""The Ray engine on a cluster of two nodes started on this machine (``ray start --head`` with
no CPU for actors, and a second ``ray start --address`` with two CPUs and its own resources):
the actors, all on the second node, write their parts into the workspace, the driver on the
head only counts them, and the parts equal the local engine's."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.files import read_json
from curate.passes.score import score

pytestmark = pytest.mark.slow
RAY = Path(sys.executable).with_name("ray")
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args: str) -> None:
    r = subprocess.run([str(RAY), *args, "--disable-usage-stats"], capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head node without CPUs (the driver's) and a second node with two; the address."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    try:
        _ray("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
             "--num-cpus", "0", "--include-dashboard", "false")
        _ray("start", "--address", address, "--node-ip-address", "127.0.0.1",
             "--num-cpus", "2", "--resources", '{"second_node": 1}')
        yield address
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120)


def _on_cluster(code: str, ws: Path, address: str) -> dict:
    """Run ``code`` (the pass call, ``ws`` and ``address`` in scope) in a fresh driver process
    joined to the cluster; the report's ``extra`` it prints."""
    script = ("import json, sys\n" f"ws, address = sys.argv[1], sys.argv[2]\n{code}\n"
              "import ray\n"
              "print(json.dumps(dict(r.extra, driver=ray.get_runtime_context().get_node_id())))")
    r = subprocess.run([sys.executable, "-c", script, str(ws), address], capture_output=True,
                       text=True, timeout=900, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _same_parts(a: Path, b: Path) -> int:
    names = sorted(p.name for p in a.glob("part-*.parquet"))
    assert names and names == sorted(p.name for p in b.glob("part-*.parquet"))
    for name in names:
        ta, tb = pq.read_table(a / name), pq.read_table(b / name)
        assert ta.schema == tb.schema and ta.equals(tb), f"{a.name}/{name} differs"
    return len(names)


def test_two_nodes_write_the_parts_the_local_engine_writes(
        cluster: str, ingested: Path, embedded: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(ingested, ws)
    extra = _on_cluster("from curate.passes.embed import embed\n"
                        "r = embed(ws, 'tiny-clip', batch_size=64, engine='ray', "
                        "address=address, actors=2, progress=False)", ws, cluster)
    # the actors ran on the second node (the head has no CPU) and wrote every part there
    assert len(extra["writer_nodes"]) == 1 and extra["driver"] not in extra["writer_nodes"]
    assert extra["rows_this_run"] > 0
    assert _same_parts(embedded / "embeddings/tiny-clip", ws / "embeddings/tiny-clip") == 6
    m = read_json(ws / "embeddings/tiny-clip/manifest.json")
    assert m["status"] == "complete" and m["engine"]["address"] == cluster
    assert m["engine"]["actors"] == 2
    assert not list((ws / "embeddings/tiny-clip").glob(".*.tmp"))  # renamed into place

    local = tmp_path / "local"
    shutil.copytree(embedded, local)
    score(local, "text_stats", progress=False)
    extra = _on_cluster("from curate.passes.score import score\n"
                        "r = score(ws, 'text_stats', engine='ray', address=address, "
                        "actors=2, progress=False)", ws, cluster)
    assert len(extra["writer_nodes"]) == 1 and extra["driver"] not in extra["writer_nodes"]
    assert _same_parts(local / "scores/text_stats", ws / "scores/text_stats") == 6
