"""The ``uids`` format: the selection as DataComp's subset file, no images.

``OUT/{name}-000000.npy`` is a sorted structured NumPy array of two ``uint64`` fields (dtype
``u8,u8``), each DataComp uid's 128 bits as (high, low): the file DataComp's resharder
(``--subset-file``) and its baselines take. The samples' ``uid`` column (from DataComp-style
sources) is what it is made of; a selection with a sample that has none is one error line.
"""

from __future__ import annotations

from typing import Any

import blake3
import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.export.read import SourceReader
from curate.export.writer import Target, record_shard
from curate.files import atomic_path
from curate.select.ids import uid_pairs

MEMBERS = {"uid": "DataComp's 128-bit uid as a (u8, u8) pair, sorted"}
NO_UID = ("the selection's samples have no uid (it comes only from DataComp-style sources, "
          "as a .json 'uid' or a uid column); export another format")


class UidsWriter:
    """Collects the selected samples' uids and writes them, sorted, as one ``.npy``."""

    format, suffix, members = "uids", ".npy", MEMBERS
    needs = ("uid",)  # pairs columns the export must hand over (as ``m.uid``)
    missing = NO_UID  # the error line when the catalog has none of them
    card = False  # the data card describes webdataset shards only (so far): no README.md

    def open(self, target: Target, state: dict, reader: SourceReader | None = None) -> None:
        self.target, self.state = target, state
        self.uids: list[str] = []
        self._planned = [{"name": s["name"], "first": s["first"]} for s in state["shards"]]
        if not self._planned:
            self._planned.append({"name": target.shard(0, self.suffix).name, "first": 0})

    @property
    def planned(self) -> list[dict]:
        return self._planned

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self._add(batch.column("m.uid").to_pylist())

    def write(self, sample: dict[str, Any]) -> None:
        """One sample with a ``uid`` (or a ``json`` dict that has one)."""
        js = sample.get("json")
        self._add([sample.get("uid", js.get("uid") if isinstance(js, dict) else None)])

    def _add(self, uids: list[str | None]) -> None:
        if any(u is None for u in uids):
            raise CurateError(NO_UID)
        self.uids += uids

    def close(self) -> list[dict]:
        """Write the sorted array (unless a resumed run's state already records it)."""
        if self.state["shards"]:
            return self.state["shards"]
        if not self.uids:
            raise CurateError(NO_UID)
        arr = uid_pairs([u.lower() for u in self.uids])
        final = self.target.shard(0, self.suffix)
        with atomic_path(final) as tmp, open(tmp, "wb") as f:  # a path would get ".npy"
            np.save(f, arr, allow_pickle=False)
        data = final.read_bytes()
        record_shard(self.target, self.state, {
            "name": final.name, "first": 0, "samples": len(arr), "bytes": len(data),
            "blake3": blake3.blake3(data).hexdigest()})
        return self.state["shards"]

    def abort(self) -> None:
        """Nothing to remove: the array is written whole, at close."""
