"""GPU benchmarks of the quantization path: `python bench/gpu_quantize_bench.py [--quick] [--json FILE]`.

1. viterbi_quantize (L=16, HYB, tail-biting 256-weight tiles) at K = 2, 3, 4: tiles/s on the GPU, against the
   CPU kernel and against qtip_ops.reference (pure PyTorch) on the same GPU. Also checks that the GPU result
   equals the CPU one on the tiles timed on both.
2. rht: GB/s (bytes read + written) of the fused kernel, of a dense matmul by the Hadamard matrix, and of a
   plain copy (the bandwidth ceiling), for fp16 and fp32 rows of n = 1024 ... 65536.
3. quantize_weight (RHT + BlockLDLQ + Viterbi, K=2) on Llama-3-8B shapes (4096x4096, 1024x4096, 14336x4096,
   4096x14336) with a synthetic Hessian, and the whole-model time projected from them (32 layers of
   q, k, v, o, gate, up, down, plus the measured Hessian accumulation of one layer).

Exits with a message (status 0) where there is no GPU or qtip_ops lacks its CUDA kernels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def _sync():
    torch.cuda.synchronize()


def timed(fn, repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time of fn() over `repeat` runs (seconds), after `warmup` runs."""
    for _ in range(warmup):
        fn()
    _sync()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - start)
    return best


def bench_viterbi(quick: bool) -> list[dict]:
    import qtip_ops
    from qtip_ops import reference

    tlut = qtip_ops.default_hyb_tlut()
    rows = []
    for K in (2, 3, 4):
        gen = torch.Generator().manual_seed(K)
        big = 1024 if quick else 8192
        x = torch.randn(big, 256, generator=gen)
        xg, tg = x.cuda(), tlut.cuda()
        t_gpu = timed(lambda: qtip_ops.viterbi_quantize(xg, 16, K, 2, "hyb", tg), repeat=2 if quick else 3)
        few = 4 if quick else 16
        t_cpu = timed(lambda: qtip_ops.viterbi_quantize(x[:few], 16, K, 2, "hyb", tlut), repeat=1, warmup=0)
        t_ref = timed(lambda: reference.viterbi_quantize(xg[:few], 16, K, 2, "hyb", tg), repeat=1, warmup=1)
        gpu_out = qtip_ops.viterbi_quantize(xg[:few], 16, K, 2, "hyb", tg)
        cpu_out = qtip_ops.viterbi_quantize(x[:few], 16, K, 2, "hyb", tlut)
        identical = torch.equal(gpu_out[0].cpu(), cpu_out[0]) and torch.equal(gpu_out[1].cpu(), cpu_out[1])
        row = {"K": K, "gpu_tiles_per_s": big / t_gpu, "cpu_tiles_per_s": few / t_cpu,
               "reference_gpu_tiles_per_s": few / t_ref, "gpu_equals_cpu": identical}
        row["vs_cpu"] = row["gpu_tiles_per_s"] / row["cpu_tiles_per_s"]
        row["vs_reference"] = row["gpu_tiles_per_s"] / row["reference_gpu_tiles_per_s"]
        rows.append(row)
        print(f"viterbi K={K}: GPU {row['gpu_tiles_per_s']:9.0f} tiles/s | CPU {row['cpu_tiles_per_s']:7.1f} "
              f"({row['vs_cpu']:6.0f}x) | reference on GPU {row['reference_gpu_tiles_per_s']:7.1f} "
              f"({row['vs_reference']:5.0f}x; target >= 50x) | bit-identical to CPU: {identical}", flush=True)
    return rows


def bench_rht(quick: bool) -> list[dict]:
    import qtip_ops
    from qtip_ops.hadamard import hadamard_dense

    rows = []
    sizes = [1024, 4096, 14336, 16384, 65536] if not quick else [4096, 14336, 65536]
    for dtype in (torch.float16, torch.float32):
        for n in sizes:
            elems = (1 << 26) if not quick else (1 << 24)
            batch = max(1, elems // n)
            x = torch.randn(batch, n, device="cuda").to(dtype)
            s = torch.randn(n, device="cuda").sign()
            y = torch.empty_like(x)
            nbytes = 2 * x.numel() * x.element_size()
            t_rht = timed(lambda: qtip_ops.rht(x, s, False, 1.0), repeat=5)
            t_copy = timed(lambda: y.copy_(x), repeat=5)
            row = {"dtype": str(dtype).split(".")[-1], "n": n, "rows": batch,
                   "rht_GBps": nbytes / t_rht / 1e9, "copy_GBps": nbytes / t_copy / 1e9}
            if n <= 16384:  # the dense matrix of larger n does not fit comfortably
                had = hadamard_dense(n).to(device="cuda", dtype=dtype)
                t_mm = timed(lambda: (x * s.to(dtype)) @ had, repeat=3)
                row["matmul_GBps"] = nbytes / t_mm / 1e9
                del had
            row["of_copy"] = row["rht_GBps"] / row["copy_GBps"]
            err = (qtip_ops.rht(x[:4].float(), s, False, 1.0).cpu()
                   - qtip_ops.rht(x[:4].float().cpu(), s.cpu(), False, 1.0)).abs().max().item()
            row["max_abs_err_vs_cpu"] = err
            rows.append(row)
            mm = f"{row['matmul_GBps']:7.0f}" if "matmul_GBps" in row else "      -"
            print(f"rht {row['dtype']:8s} n={n:6d}: {row['rht_GBps']:7.0f} GB/s  dense matmul {mm} GB/s  copy "
                  f"{row['copy_GBps']:7.0f} GB/s  -> {100 * row['of_copy']:5.1f}% of copy (target >= 70% for "
                  f"n >= 4096); max |err| vs CPU {err:.1e}", flush=True)
            del x, y
    return rows


def bench_layers(quick: bool) -> dict:
    from qtip_ops.quantize import CodeConfig, quantize_weight

    code = CodeConfig(K=2)
    shapes = {"q/o 4096x4096": (4096, 4096), "k/v 1024x4096": (1024, 4096), "gate/up 14336x4096": (14336, 4096),
              "down 4096x14336": (4096, 14336)}
    if quick:
        shapes = {"q/o 4096x4096": (4096, 4096), "k/v 1024x4096": (1024, 4096)}
    times = {}
    for label, (m, n) in shapes.items():
        gen = torch.Generator(device="cuda").manual_seed(0)
        w = torch.randn(m, n, device="cuda", generator=gen) * 0.02
        x = torch.randn(8192, n, device="cuda", generator=gen, dtype=torch.float64)
        h = x.T @ x / x.shape[0]
        del x
        _sync()
        start = time.perf_counter()
        q = quantize_weight(w, h, code, seed=0)
        _sync()
        times[label] = time.perf_counter() - start
        print(f"quantize_weight {label:20s}: {times[label]:7.1f} s  proxy error {q.proxy_error:.4f}", flush=True)
        del q, w, h
        torch.cuda.empty_cache()
    # Hessian accumulation of one Llama-3-8B-shaped layer's inputs: 128 windows x 512 tokens.
    tokens = 128 * 512
    start = time.perf_counter()
    sums = {}
    for n, share in ((4096, "qkv"), (4096, "o"), (4096, "up"), (14336, "down")):
        for chunk in range(0, tokens, 8 * 512):
            xb = torch.randn(8 * 512, n, device="cuda")
            x2 = xb.to(torch.float64)
            sums[share] = sums.get(share, 0) + x2.T @ x2
    _sync()
    t_hess = time.perf_counter() - start
    print(f"Hessian accumulation (4 groups, {tokens} tokens, fp64): {t_hess:.1f} s per layer", flush=True)
    result = {"layer_seconds": times, "hessian_seconds_per_layer": t_hess}
    if not quick:
        per_layer = (2 * times["q/o 4096x4096"] + 2 * times["k/v 1024x4096"] + 2 * times["gate/up 14336x4096"]
                     + times["down 4096x14336"] + t_hess)
        result["projected_llama3_8b_seconds"] = 32 * per_layer
        print(f"projected Llama-3-8B (32 layers, K=2, L=16, calibration forwards not included): "
              f"{32 * per_layer / 60:.1f} min (target <= 10 min)", flush=True)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--only", choices=["viterbi", "rht", "layers"], nargs="*", help="run only these parts")
    args = p.parse_args(argv)
    import qtip_ops
    from qtip_ops._library import has_cuda_kernels

    if not has_cuda_kernels():
        print("gpu_quantize_bench: no GPU, or qtip_ops was built without its CUDA kernels; nothing to measure.")
        return 0
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  qtip_ops {qtip_ops.__file__}")
    parts = args.only or ["viterbi", "rht", "layers"]
    results = {}
    if "viterbi" in parts:
        results["viterbi"] = bench_viterbi(args.quick)
    if "rht" in parts:
        results["rht"] = bench_rht(args.quick)
    if "layers" in parts:
        results["layers"] = bench_layers(args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
