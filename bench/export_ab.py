"""A/B of two checkouts' ``curate export`` against the raw byte copy (not a test).

    .venv/bin/python bench/export_ab.py CHECKOUT_A CHECKOUT_B [--rounds 8] [--repeats 2]
        [--workspace bench/out/export/ws-30000-256]

Each round starts one child process per checkout (in alternating order), which imports
``curate`` from its checkout, warms up (one raw copy, one export) and then runs ``--repeats``
pairs of a raw copy and an export of selection ``all``, each after ``sync``, as
``bench/export.py`` does. The medians over all pairs are printed, with their ranges: export
rate, raw-copy rate and the ratio per pair. On the shared 2-core VM a single run of either moves
by +-30% and the machine's speed drifts over minutes, so only alternating children compare two
changes fairly; read a difference smaller than the spread of ratios between rounds as none. The
workspace is one ``bench/export.py`` made (it has selections ``all`` and ``quarter``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(checkout: Path, ws: Path, repeats: int, root: Path) -> list[tuple[float, float]]:
    """(raw copy rate, export rate) of ``repeats`` pairs, with ``checkout``'s curate."""
    sys.path.insert(0, str(checkout))
    import curate
    from curate.export import export  # first, so bench/export.py gets this one too
    if not Path(curate.__file__).resolve().is_relative_to(checkout):
        raise SystemExit(f"curate came from {curate.__file__}, not {checkout}")

    sys.path.insert(0, str(HERE))
    from export import raw_copy  # this bench's raw copy, the same for both
    root.mkdir(parents=True, exist_ok=True)
    out, raw = root / "exported", root / "raw.bin"
    raw_copy(ws, raw)
    shutil.rmtree(out, ignore_errors=True)
    export(ws, "all", out, shard_size=1000, card=False, progress=False)
    pairs = []
    for _ in range(repeats):
        raw.unlink(missing_ok=True)
        os.sync()
        n, _, seconds = raw_copy(ws, raw)
        shutil.rmtree(out, ignore_errors=True)
        os.sync()
        t = time.perf_counter()
        export(ws, "all", out, shard_size=1000, card=False, progress=False)
        pairs.append((n / seconds, n / (time.perf_counter() - t)))
    raw.unlink(missing_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkouts", nargs="*", type=Path)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workspace", type=Path, default=HERE / "out/export/ws-30000-256")
    ap.add_argument("--out", type=Path, default=HERE / "out/export-ab")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.workspace.resolve(), a.repeats, a.out)))
        return
    if len(a.checkouts) != 2:
        ap.error("give two checkouts")
    pairs: dict[Path, list] = {c: [] for c in a.checkouts}
    for r in range(a.rounds):
        for c in a.checkouts if r % 2 == 0 else a.checkouts[::-1]:
            run = subprocess.run([sys.executable, __file__, "--child", str(c.resolve()),
                                  "--workspace", str(a.workspace), "--repeats",
                                  str(a.repeats), "--out", str(a.out)],
                                 capture_output=True, text=True, check=True)
            pairs[c] += json.loads(run.stdout.splitlines()[-1])
        print(f"round {r}: " + ", ".join(
            f"{c}: {statistics.median(e / w for w, e in v):.3f}" for c, v in pairs.items()),
            file=sys.stderr)
    print(json.dumps({str(c): summary(v) for c, v in pairs.items()}, indent=2))


def summary(pairs: list[tuple[float, float]]) -> dict:
    """Medians of the (raw copy rate, export rate) pairs and the range of each."""
    ratios = [e / w for w, e in pairs]
    exp, raw = [e for _, e in pairs], [w for w, _ in pairs]
    return {"pairs": len(pairs), "ratio": round(statistics.median(ratios), 3),
            "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
            "export_samples_per_s": round(statistics.median(exp)),
            "export_range": [round(min(exp)), round(max(exp))],
            "raw_copy_samples_per_s": round(statistics.median(raw)),
            "raw_copy_range": [round(min(raw)), round(max(raw))]}


if __name__ == "__main__":
    main()
