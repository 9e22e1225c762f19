"""How much memory vLLM's CPU linear layers keep per batch size: oneDNN's primitive caches, and their cap.

    python perf/onednn_cache_probe.py [--max-m 1600] [--capacities default,64]

On CPU, vLLM runs every unquantized linear layer through a oneDNN matmul handler
(vllm/model_executor/layers/utils.py: ``ops.create_onednn_mm(weight, 32)``) that builds one primitive per
distinct M (the tokens of a step: decode batch sizes, prefill chunk lengths, vision patches) and keeps 32 per
layer; oneDNN keeps up to ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` (1024 by default) more in its global cache. A
long soak sees thousands of distinct M, so vLLM's Worker process grows until these caches are full: the soak's
warm-up (perf/chaos.py). This builds handlers for the tiny Qwen2-VL's linear shapes (fp32, as the tests run it),
calls each with M = 1 .. ``--max-m``, and prints the RSS growth (after ``malloc_trim(0)``, so only memory in
use counts) every few hundred M, once per capacity (each in a fresh process: oneDNN reads the variable once).
Needs no tritonserver and no engine, only vLLM's CPU kernels (a minute or so on one core).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys

# (K, N) of the tiny Qwen2-VL's linear layers (.tiny/qwen2_vl: text hidden 128, 2 heads + 1 KV head of 64,
# intermediate 256, vocab 512; vision width 64, MLP 128, merger 256).
SHAPES = [(128, 256), (128, 128), (128, 512), (256, 128), (128, 512),  # qkv, o, gate_up, down, lm_head
          (64, 192), (64, 64), (64, 128), (128, 64), (256, 256), (256, 128)]  # vision qkv, proj, fc1, fc2, merger


def probe(max_m: int, every: int) -> list[tuple[int, float]]:
    """(M reached, MiB grown since the handlers were built), in this process."""
    import psutil
    import torch
    import vllm._custom_ops as ops

    libc = ctypes.CDLL("libc.so.6")
    torch.set_num_threads(1)
    proc = psutil.Process()
    handlers = [(k, ops.create_onednn_mm(torch.randn(n, k).t(), 32)) for k, n in SHAPES]
    libc.malloc_trim(0)
    base = proc.memory_info().rss
    out = []
    for m in range(1, max_m + 1):
        for k, handler in handlers:
            ops.onednn_mm(handler, torch.randn(m, k), None)
        if m % every == 0:
            libc.malloc_trim(0)
            out.append((m, (proc.memory_info().rss - base) / 2**20))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-m", type=int, default=1600)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--capacities", default="default,64", help="ONEDNN_PRIMITIVE_CACHE_CAPACITY values")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(probe(args.max_m, args.every)))
        return 0
    print(f"{len(SHAPES)} linear layers (fp32), M = 1..{args.max_m}: MiB in use beyond the handlers themselves")
    print("| ONEDNN_PRIMITIVE_CACHE_CAPACITY | " + " | ".join(f"M {m}" for m in range(args.every, args.max_m + 1,
                                                                                       args.every)) + " |")
    print("|---" * (args.max_m // args.every + 1) + "|")
    for capacity in args.capacities.split(","):
        env = dict(os.environ)
        env.pop("ONEDNN_PRIMITIVE_CACHE_CAPACITY", None)
        if capacity != "default":
            env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = capacity
        done = subprocess.run([sys.executable, __file__, "--child", "--max-m", str(args.max_m), "--every",
                               str(args.every)], env=env, capture_output=True, text=True, check=True)
        points = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {capacity} | " + " | ".join(f"{mib:+.0f}" for _, mib in points) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
