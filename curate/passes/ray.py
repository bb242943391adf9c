"""``--engine ray``: a pass's parts computed and written by a Ray Data actor pool.

The unit of work is a samples part, the unit the local runner resumes by. Ray Data maps the
pending parts over an actor pool (``map_batches`` with a callable class, one part per call):
each actor builds its worker once (loads the model, or receives the pass's prepared state),
turns a part's path into the pass's output table with the same function the local engine
runs, and writes it into the pass's folder itself, as the runner would (a temporary name,
renamed when whole, the weights in its metadata). The driver receives only each part's name,
row count, node and error, so it never carries the parts (a 10M-sample embedding pass is
tens of GB); the runner then writes the manifest. Resume (finished parts are never sent),
atomicity and everything downstream are those of the local engine.

Every node reads the workspace and the source shards by the paths in ``samples/`` and writes
the pass's folder: on a cluster they must be on storage every node mounts at the same path
(NFS, a shared disk).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from curate.errors import CurateError
from curate.files import write_parquet
from curate.passes.runner import Written, stamped

# builds, once per actor, the function that turns one samples part into the pass's table
Factory = Callable[[], Callable[[Path], pa.Table]]


@dataclass(frozen=True)
class Cluster:
    """What the connected Ray cluster offers and how a pass will use it."""

    cpus: int
    gpus: int
    actors: int
    cpus_per_actor: int

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"

    def describe(self, address: str | None) -> dict:
        return {"name": "ray", "address": address or "local", "actors": self.actors,
                "cpus_per_actor": self.cpus_per_actor, "gpus_per_actor": 1 if self.gpus else 0}


def cluster_for(engine: str, address: str | None, actors: int | None) -> Cluster | None:
    """The Ray cluster a pass runs on for ``engine`` ("ray"), or None for the local runner;
    an unknown engine fails before any work."""
    if engine == "local":
        return None
    if engine != "ray":
        raise CurateError(f"unknown engine {engine!r}; engines: local, ray")
    return connect(address, actors)


def connect(address: str | None = None, actors: int | None = None) -> Cluster:
    """Join the cluster at ``address`` (``auto``, ``ray://host:10001``) or start a local one,
    and size the actor pool: one actor per GPU, else one per CPU."""
    try:
        import ray
    except ModuleNotFoundError:
        raise CurateError("--engine ray needs Ray: pip install 'curate[ray]'") from None
    _check_reachable(address)
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, runtime_env={"env_vars": _child_env()})
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = address or "a local instance"
            raise CurateError(f"cannot start Ray on {where}: {str(e).splitlines()[0]}") from None
    # the runner reports progress, and an actor's error comes back as one CurateError line
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    res = ray.cluster_resources()
    cpus, gpus = int(res.get("CPU", 1)), int(res.get("GPU", 0))
    n = max(1, actors or (gpus or cpus))
    per = max(1, cpus // n) if gpus else 1
    return Cluster(cpus, gpus, n, per)


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail in seconds, with one line, when a HOST:PORT (or ray://HOST:PORT) address does not
    answer: Ray itself retries for minutes before it gives up."""
    m = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address or "")
    if m is None:  # None, "auto", "local": Ray finds (or starts) the cluster itself
        return
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout).close()
    except OSError as e:
        raise CurateError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); "
                          "is `ray start --head` running there, and is the port open?"
                          ) from None


def _child_env() -> dict[str, str]:
    """Cache folders the actors share with the driver (models, numba), when set."""
    keys = ("CURATE_CACHE", "NUMBA_CACHE_DIR", "HF_HUB_OFFLINE", "HF_HOME")
    return {k: os.environ[k] for k in keys if k in os.environ}


class _Actor:
    """One actor of the pool: builds its worker once, then computes and writes one part per
    call. Its own errors come back as data (Ray would keep only their traceback text)."""

    def __init__(self, factory: Factory, out_dir: str,
                 weights: dict[str, str] | None) -> None:
        import ray
        self.out_dir, self.weights = Path(out_dir), weights
        self.node = ray.get_runtime_context().get_node_id()
        try:
            self.fn, self.error = factory(), ""
        except Exception as e:
            self.fn, self.error = None, _line(e)

    def __call__(self, batch: dict) -> dict:
        parts = [str(p) for p in batch["part"]]
        out: dict[str, list] = {"part": parts, "rows": [], "node": [], "error": []}
        for part in parts:
            rows, error = 0, self.error
            if not error:
                try:
                    table = self.fn(Path(part))
                    write_parquet(stamped(table, self.weights), self.out_dir / Path(part).name)
                    rows = table.num_rows
                except Exception as e:
                    error = _line(e)
            out["rows"].append(rows)
            out["node"].append(self.node)
            out["error"].append(error)
        return out


def _line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def process(factory: Factory, cluster: Cluster, out_dir: Path,
            weights: dict[str, str] | None
            ) -> Callable[[list[Path], Callable[[int], None]], Iterator[tuple[Path, Written]]]:
    """A runner ``process`` whose pending parts ``cluster``'s actor pool computes and writes
    into ``out_dir`` (the pass's folder), stamped with ``weights``."""

    def run(pending: list[Path], advance: Callable[[int], None]
            ) -> Iterator[tuple[Path, Written]]:
        if not pending:
            return
        import ray
        ray.data.DataContext.get_current().enable_progress_bars = False  # the runner has one
        by_name = {str(p): p for p in pending}
        ds = ray.data.from_items([{"part": str(p)} for p in pending],
                                 override_num_blocks=len(pending))
        pool = ray.data.ActorPoolStrategy(size=min(cluster.actors, len(pending)))
        out = ds.map_batches(_Actor, fn_constructor_args=(factory, str(out_dir), weights),
                             batch_size=1,
                             compute=pool, num_cpus=cluster.cpus_per_actor,
                             num_gpus=1 if cluster.gpus else 0)
        rows = iter(out.iter_rows())
        try:
            yield from _collect(rows, by_name, advance)
        finally:  # a consumer that stops early stops Ray Data's iterator thread too
            close = getattr(rows, "close", None)
            if close is not None:
                close()

    return run


def _collect(rows: Iterator[dict], by_name: dict[str, Path], advance: Callable[[int], None]
             ) -> Iterator[tuple[Path, Written]]:
    """Yield every part that succeeded, then raise for the first that failed. Reading the
    stream to its end keeps the other actors' work and lets Ray Data's iterator thread finish:
    one still running at ``ray.shutdown()`` touches the dead core worker, which exits 1."""
    import ray
    failed: list[str] = []
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except ray.exceptions.RayError as e:  # a lost actor or node, not the pass's error
            raise CurateError(f"the Ray job failed: {_line(e)}; finished parts are kept, "
                              "rerun to resume") from None
        if row["error"]:
            failed.append(f"{Path(row['part']).name} failed on a Ray actor: {row['error']}")
            continue
        advance(int(row["rows"]))
        yield by_name[row["part"]], Written(int(row["rows"]), str(row["node"]))
    if failed:
        more = f" (and {len(failed) - 1} more parts)" if len(failed) > 1 else ""
        raise CurateError(f"{failed[0]}{more}; finished parts are kept, rerun to resume")
