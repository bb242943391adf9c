"""Embedding throughput of ViT-B-32 and ViT-L-14 shaped models (random init, no download)
against their compute bound: FLOPs per image counted by torch's FlopCounterMode on the model
itself, and the device's dense bf16 peak.

    .venv/bin/python bench/gpu.py                 # on a machine with a GPU
    .venv/bin/python bench/gpu.py --device cpu --batch 4 --iters 2   # path check on CPU
"""

from __future__ import annotations

import argparse
import time

import open_clip
import torch
from torch.utils.flop_counter import FlopCounterMode

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def peak_tflops(device: str, given: float | None) -> float | None:
    if given or not device.startswith("cuda"):
        return given
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def flops_per_image(model: torch.nn.Module, size: int) -> float:
    x = torch.zeros(1, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.encode_image(x)
    return float(counter.get_total_flops())


def throughput(arch: str, device: str, batch: int, iters: int) -> dict:
    model = open_clip.create_model(arch, pretrained=None).eval()
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    flops = flops_per_image(model, size)
    model = model.to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    autocast = torch.autocast(device.split(":")[0], torch.bfloat16)
    with torch.no_grad(), autocast:
        for _ in range(2):  # warm-up: kernels, allocator
            model.encode_image(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(iters):
            model.encode_image(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
    rate = batch * iters / dt
    return {"arch": arch, "gflops_per_image": flops / 1e9, "images_per_s": rate,
            "tflops": rate * flops / 1e12}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--peak-tflops", type=float, default=None)
    a = ap.parse_args()
    peak = peak_tflops(a.device, a.peak_tflops)
    name = torch.cuda.get_device_name(a.device) if a.device.startswith("cuda") else "cpu"
    print(f"device {name}; bf16 autocast; batch {a.batch}; peak {peak or '?'} TFLOPs")
    print(f"{'model':<10}{'GFLOPs/img':>12}{'img/s':>10}{'TFLOPs':>9}{'bound img/s':>13}"
          f"{'of bound':>10}")
    for arch in ("ViT-B-32", "ViT-L-14"):
        r = throughput(arch, a.device, a.batch, a.iters)
        bound = peak * 1e12 / (r["gflops_per_image"] * 1e9) if peak else float("nan")
        print(f"{arch:<10}{r['gflops_per_image']:>12.2f}{r['images_per_s']:>10.0f}"
              f"{r['tflops']:>9.1f}{bound:>13.0f}{r['images_per_s'] / bound:>10.2f}")


if __name__ == "__main__":
    main()
