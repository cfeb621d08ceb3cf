"""Where a switched layer's time goes, at the hybrid ResNet-18's stage shapes.

For each stage (channels, map size): a training step (forward + backward) of the 3x3 conv, of the
same layer switched to attention, and of its content term alone - scaled_dot_product_attention
with 9 heads of q/k width 16 and value width C - under each SDPA backend that accepts it, plus the
same with q/k zero-padded to width C (same scores when the scale is kept; flash needs equal widths).
bf16 autocast on CUDA, fp32 on CPU. Prints a table and writes JSON:

    python benchmarks/gpsa_layer.py [--batch 512] [--output benchmarks/out/gpsa_layer.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from prs.reparam import ReparamConv2d
from prs.env import device_name, git_commit, pick_device, synchronize, versions

STAGES = [(64, 32), (128, 16), (256, 8), (512, 4)]  # (channels, map size); the default hybrid switches 2-4
BACKENDS = {"math": SDPBackend.MATH, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}


def step_ms(fn, inputs, device, repeats):
    """Median time of forward + backward, in milliseconds."""
    def once():
        for t in inputs:
            t.grad = None
        fn(*inputs).float().sum().backward()
    once()  # warm-up (kernel selection, allocator)
    times = []
    for _ in range(repeats):
        synchronize(device)
        tick = time.perf_counter()
        once()
        synchronize(device)
        times.append(1e3 * (time.perf_counter() - tick))
    return sorted(times)[len(times) // 2]


def stage_row(channels, size, batch, device, dtype, repeats):
    x = torch.randn(batch, channels, size, size, device=device, requires_grad=True)
    layer = ReparamConv2d(channels, channels).to(device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    with autocast:
        row = {"channels": channels, "size": size, "conv_ms": step_ms(layer, [x], device, repeats)}
        layer.switch_to_attention()
        row["attention_ms"] = step_ms(layer, [x], device, repeats)
    n, heads = size * size, layer.num_heads
    q, k = (torch.randn(batch, heads, n, layer.qk_dim, device=device, dtype=dtype, requires_grad=True)
            for _ in range(2))
    v = torch.randn(batch, 1, n, channels, device=device, dtype=dtype, requires_grad=True)
    pad = channels - layer.qk_dim
    variants = {
        "as_used": lambda q, k, v: F.scaled_dot_product_attention(q, k, v.expand(-1, heads, -1, -1)),
        "qk_padded": lambda q, k, v: F.scaled_dot_product_attention(
            F.pad(q, (0, pad)), F.pad(k, (0, pad)), v.expand(-1, heads, -1, -1), scale=layer.qk_dim ** -0.5),
    }
    for variant, fn in variants.items():
        for backend, kernel in BACKENDS.items():
            try:
                with sdpa_kernel(kernel), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # each refusing backend warns why; the table says it
                    row[f"content_{variant}_{backend}_ms"] = step_ms(fn, [q, k, v], device, repeats)
            except RuntimeError:
                row[f"content_{variant}_{backend}_ms"] = None  # the backend does not accept these shapes here
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=None, help="default 512 on CUDA, 8 on CPU")
    p.add_argument("--repeats", type=int, default=None, help="default 10 on CUDA, 2 on CPU")
    p.add_argument("--device", default="auto")
    p.add_argument("--output", default="benchmarks/out/gpsa_layer.json")
    args = p.parse_args()
    device = pick_device(args.device, setting="--device")
    cuda = device.type == "cuda"
    batch = args.batch or (512 if cuda else 8)
    repeats = args.repeats or (10 if cuda else 2)
    dtype = torch.bfloat16 if cuda else torch.float32
    rows = []
    for channels, size in STAGES:
        row = stage_row(channels, size, batch, device, dtype, repeats)
        rows.append(row)
        cells = "  ".join(f"{key.removeprefix('content_').removesuffix('_ms')} "
                          + ("-" if value is None else f"{value:.2f}")
                          for key, value in row.items() if key.startswith("content_"))
        print(f"C{channels} {size}x{size}: conv {row['conv_ms']:.2f} ms  attention {row['attention_ms']:.2f} ms  "
              f"(x{row['attention_ms'] / row['conv_ms']:.1f})  content SDPA: {cells}", flush=True)
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "device": device_name(device), "commit": git_commit(),
              "versions": versions(), "batch": batch, "dtype": str(dtype), "repeats": repeats, "stages": rows}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
