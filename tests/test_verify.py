"""curate verify: finds what a kill, a deleted or truncated part, a stale selection and a
garbage catalog leave; --repair rebuilds what can be rebuilt; the integrity check refuses to
let a verb read an incomplete pass."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.errors import CurateError
from curate.integrity import all_passes, require_complete
from curate.passes.score import score
from curate.verify import verify


@pytest.fixture()
def scored(embedded: Path, tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(embedded, ws)
    score(ws, "text_stats", progress=False)
    return ws


def test_a_sound_workspace_verifies(scored: Path) -> None:
    r = verify(scored)
    assert r.findings == [] and r.ok
    assert r.checked["passes"] == 2 and r.checked["samples parts"] == 6
    assert all(h.complete for h in all_passes(scored_ws(scored)))


def scored_ws(path: Path):  # noqa: ANN201
    from curate.workspace import Workspace
    return Workspace.open(path)


def test_a_deleted_part_is_found_and_refused_until_resumed(scored: Path) -> None:
    (scored / "scores" / "text_stats" / "part-000002.parquet").unlink()
    r = verify(scored)
    assert not r.ok
    [f] = r.findings
    assert f.what == "scores/text_stats" and "1 of 6 parts missing (part-000002" in f.problem
    assert "curate score -w" in f.fix and "text_stats" in f.fix
    with pytest.raises(CurateError, match=r"select reads scores/text_stats, which is "
                       r"incomplete: 1 of 6 parts missing .* --allow-partial") as e:
        require_complete(scored_ws(scored), "select")
    assert "\n" not in str(e.value)
    assert [h.key for h in require_complete(scored_ws(scored), "select", allow_partial=True)
            ] == ["text_stats"]
    score(scored, "text_stats", progress=False)  # the command it names resumes it
    assert verify(scored).findings == []


def test_a_killed_run_is_incomplete(scored: Path) -> None:
    m = scored / "scores" / "text_stats" / "manifest.json"
    m.write_text(m.read_text().replace('"status": "complete"', '"status": "running"'))
    [f] = verify(scored).findings
    assert "'running'" in f.problem
    m.write_text("")  # a 0-byte manifest is one line too, not a traceback
    [f] = verify(scored).findings
    assert "manifest.json unreadable" in f.problem


def test_a_truncated_part_is_removed_by_repair_and_recomputed(scored: Path) -> None:
    part = scored / "scores" / "text_stats" / "part-000001.parquet"
    want = pq.read_table(part)
    part.write_bytes(part.read_bytes()[:100])
    r = verify(scored)
    assert [f.problem for f in r.findings] == ["1 parts unreadable (part-000001.parquet)"]
    r = verify(scored, repair=True)
    assert not part.exists()
    assert any(f.repaired for f in r.findings)
    score(scored, "text_stats", progress=False)
    assert pq.read_table(part).equals(want)
    assert verify(scored).findings == []


def test_leftover_temporary_files_and_a_garbage_catalog(scored: Path) -> None:
    tmp = scored / "scores" / "text_stats" / ".part-000003.parquet.abc.tmp"
    tmp.write_bytes(b"half a part")
    (scored / "catalog.duckdb").write_bytes(b"this is not a database" * 100)
    whats = sorted(f.what for f in verify(scored).findings)
    assert whats == ["catalog.duckdb", "workspace"]
    r = verify(scored, repair=True)
    assert r.ok and not tmp.exists()
    import duckdb
    with duckdb.connect(str(scored / "catalog.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 600
    assert verify(scored).findings == []


def test_a_selection_made_from_changed_inputs_and_a_broken_map_are_found(scored: Path) -> None:
    from curate.select import select
    select(scored, "s", [("top", {"column": "n_words", "amount": 0.5})])
    assert verify(scored).findings == []
    m = scored / "scores" / "text_stats" / "manifest.json"  # as a recomputation leaves it
    m.write_text(m.read_text().replace('"updated_at": "', '"updated_at": "1999'))
    [f] = verify(scored).findings
    assert f.what == "selection s" and "scores/text_stats was recomputed" in f.problem
    assert "curate select" in f.fix
    (scored / "maps").mkdir()
    (scored / "maps" / "m.json").write_text('{"points": 3}')
    found = {f.what: f.problem for f in verify(scored).findings}
    assert found["map m"].startswith("a file is missing or unreadable")
