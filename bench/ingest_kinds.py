"""Ingest throughput per source kind against a raw read of the same bytes, and URL ingest
against img2dataset over loopback. Prints a table.

    python bench/ingest_kinds.py [--n 2000] [--img2dataset PATH]

Each kind gets the same ``n`` images (JPEG, 64-160 px) and captions, written by its own
producer where one is installed (``datasets``, ``webdataset``, ``lance``). ``raw`` is the time
to read every byte of the source's files once (page cache warm, as for the ingest after it);
``ratio`` is raw time / ingest time. The URL rows serve the images from
``http.server`` on 127.0.0.1: curate's fetcher (``curate.ingest.fetch``) inside ``ingest``
against ``img2dataset --resize_mode no`` (found on PATH, beside this Python, or by
``--img2dataset``), whose figure is its whole run, as a user would time it.
"""

from __future__ import annotations

import argparse
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curate.ingest import ingest
from curate.ingest.fetch import FetchConfig


def images(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        buf = io.BytesIO()
        size = 64 + i % 97
        Image.effect_noise((size, size), 40 + i % 50).convert("RGB").save(buf, "JPEG",
                                                                           quality=85)
        out.append(buf.getvalue())
    return out


def _tar(path: Path, imgs: list[bytes], caps: list[str], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for i, (img, cap) in enumerate(zip(imgs, caps, strict=True)):
            for name, data in ((f"{i:09d}.jpg", img), (f"{i:09d}.json", json.dumps(
                    {"text": cap, "uid": f"{i:032x}", "score": i / len(imgs)}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def sources(root: Path, imgs: list[bytes], caps: list[str]) -> dict[str, Path]:
    """One source per kind, all of the same samples."""
    out = {"webdataset": _tar(root / "shard.tar", imgs, caps),
           "webdataset .tar.gz": _tar(root / "shard.tar.gz", imgs, caps, "w:gz")}
    files = root / "files"
    files.mkdir()
    for i, (img, cap) in enumerate(zip(imgs, caps, strict=True)):
        (files / f"{i:06d}.jpg").write_bytes(img)
        (files / f"{i:06d}.txt").write_text(cap)
    out["folder"] = files
    pq.write_table(pa.table({"image_path": [f"files/{i:06d}.jpg" for i in range(len(imgs))],
                             "caption": caps}), root / "paths.parquet")
    out["table (paths)"] = root / "paths.parquet"
    shutil.copytree(files, root / "imagefolder", copy_function=os.link)
    meta = root / "imagefolder" / "metadata.jsonl"
    meta.write_text("".join(json.dumps({"file_name": f"{i:06d}.jpg", "text": c}) + "\n"
                            for i, c in enumerate(caps)))
    out["imagefolder"] = root / "imagefolder"  # the same files, with metadata.jsonl
    coco = {"images": [{"id": i, "file_name": f"{i:06d}.jpg"} for i in range(len(imgs))],
            "annotations": [{"id": i, "image_id": i, "caption": c} for i, c in enumerate(caps)]}
    (root / "captions_files.json").write_text(json.dumps(coco))
    out["coco"] = root / "captions_files.json"
    try:
        import datasets
        feats = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
        ds = datasets.Dataset.from_dict({"image": [{"bytes": b, "path": None} for b in imgs],
                                         "text": caps}, features=feats)
        ds.to_parquet(str(root / "hf.parquet"))
        out["hf_parquet"] = root / "hf.parquet"
        ds.save_to_disk(str(root / "saved"))
        out["hf_arrow (save_to_disk)"] = root / "saved"
    except ImportError:
        print("datasets not installed: no Hugging Face rows", file=sys.stderr)
    try:
        import lance
        lance.write_dataset(pa.table({"image": pa.array(imgs, pa.binary()), "caption": caps}),
                            str(root / "pairs.lance"))
        out["lance"] = root / "pairs.lance"
    except ImportError:
        print("pylance not installed: no Lance row", file=sys.stderr)
    return out


def raw_read(path: Path) -> tuple[float, int]:
    """Seconds to read every file under ``path`` once, and the bytes read."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    if path.name == "paths.parquet" or path.name.startswith("captions_"):
        files += [p for p in (path.parent / "files").iterdir() if p.suffix == ".jpg"]
    start, n = time.perf_counter(), 0
    for f in files:
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                n += len(chunk)
    return time.perf_counter() - start, n


def timed_ingest(paths: list[str], ws: Path, **kw: object) -> tuple[float, int, int]:
    shutil.rmtree(ws, ignore_errors=True)
    start = time.perf_counter()
    r = ingest(paths, ws, progress=False, **kw)
    return time.perf_counter() - start, r.inputs, r.ok


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a: object) -> None:
        pass


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    srv = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: Quiet(*a, directory=str(root), **k))
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


def img2dataset(exe: str, urls: Path, out: Path, threads: int) -> float:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    start = time.perf_counter()
    subprocess.run([exe, "--url_list", str(urls), "--input_format", "tsv", "--url_col", "url",
                    "--caption_col", "caption", "--output_format", "webdataset",
                    "--output_folder", str(out), "--processes_count", "1", "--thread_count",
                    str(threads), "--resize_mode", "no", "--enable_wandb", "False"],
                   check=True, env=env, capture_output=True, timeout=600)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--img2dataset", default=shutil.which(
        "img2dataset", path=str(Path(sys.executable).parent)) or shutil.which("img2dataset"))
    ap.add_argument("--threads", type=int, default=32)
    args = ap.parse_args()
    imgs = images(args.n)
    caps = [f"a noisy square number {i}" for i in range(args.n)]
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        rows = []
        made = sources(root, imgs, caps)
        timed_ingest([str(made["webdataset"])], root / "ws")  # warm up: imports, the pool
        for kind, path in made.items():
            raw, size = raw_read(path)
            secs, n, ok = timed_ingest([str(path)], root / "ws")
            rows.append((kind, n, ok, size / 1e6, n / secs, raw / secs))
        srv, base = serve(root / "files")
        urls = root / "urls.tsv"
        urls.write_text("url\tcaption\n" + "".join(
            f"{base}/{i:06d}.jpg\t{c}\n" for i, c in enumerate(caps)))
        raw, size = raw_read(root / "files")
        secs, n, ok = timed_ingest([str(urls)], root / "ws",
                                   fetch=FetchConfig(workers=args.threads))
        rows.append(("URL table: curate fetch", n, ok, size / 1e6, n / secs, raw / secs))
        if args.img2dataset:
            secs = img2dataset(args.img2dataset, urls, root / "i2d", args.threads)
            rows.append(("URL table: img2dataset", args.n, None, size / 1e6, args.n / secs,
                         raw / secs))
            secs2, n, ok = timed_ingest([str(root / "i2d")], root / "ws")
            rows.append(("  + curate ingest of it", n, ok, size / 1e6, n / (secs + secs2),
                         raw / (secs + secs2)))
        else:
            print("img2dataset not found: no img2dataset row (--img2dataset PATH)",
                  file=sys.stderr)
        srv.shutdown()
    print(f"{'source kind':<28} {'inputs':>6} {'ok':>6} {'MB':>7} {'samples/s':>10} "
          f"{'ratio':>8}")
    for kind, n, ok, mb, rate, ratio in rows:
        print(f"{kind:<28} {n:>6} {ok if ok is not None else '-':>6} {mb:>7.1f} {rate:>10.0f} "
              f"{ratio:>8.4f}")
    print(f"(ratio: time to read the same bytes raw / time to ingest them; {os.cpu_count()} "
          "cores)")


if __name__ == "__main__":
    main()
