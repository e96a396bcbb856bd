"""GPU benchmark of the qtip CUDA kernels (issue 6): prints the tables of the issue.

    python bench/gpu_bench.py [--quick] [--json out.json]

1. Anchor: device-to-device copy bandwidth (bytes read + written per second), timed with CUDA events.
2. Batch-1 gemv, HYB (L=16, V=2, Q=9), K = 2, 3, 4, for the Llama shapes, cold L2 (each call reads another
   copy of the weight; the copies together exceed the L2 several times): time, weight-stream GB/s, fraction of
   the copy bandwidth, fp16 F.linear time (also cold) and the speed-up over it. Both fp16 x (tensor-core path)
   and fp32 x (CUDA-core path, what QTIPLinear feeds gemv) are timed.
3. Batch sweep 1..64 (and beyond the fused crossover) at K=2: gemv vs fp16 F.linear vs decode-then-matmul
   (qtip_ops.decode_weight + F.linear every call, the unfused composite).
4. Tokens/s of a Llama-2-7B-shaped stack (32 layers of q/k/v/o 4096x4096, gate/up 11008x4096, down 4096x11008;
   QTIPLinear with random trellises) at batch 1 under torch.compile(mode="reduce-overhead"), vs the same stack
   with fp16 nn.Linear.

Each timing captures the calls in a CUDA graph (so launch gaps do not count; it also checks that the ops are
graph-safe) and reports the median over replays; if capture fails, it says so and times eagerly.
A quick correctness check (gemv against decode_weight + matmul) runs first for every dtype and path.
Exits with a message (status 0) when no GPU or no CUDA build of the kernels is present.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 8192), (28672, 8192)]  # (m, n) = (out, in)
BITS = [2, 3, 4]
BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
L, V, MODE = 16, 2, "hyb"


def _have_gpu_kernels() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU visible (torch.cuda.is_available() is False)"
    try:
        import qtip_ops  # noqa: F401
    except Exception as e:  # pragma: no cover
        return f"qtip_ops does not import: {e}"
    if not torch._C._dispatch_has_kernel_for_dispatch_key("qtip::gemv", "CUDA"):
        return "qtip_ops was built without its CUDA kernels (rebuild with nvcc and a CUDA torch)"
    return None


# ----------------------------------------------------------------------------------------------- timing


def time_calls(fns, reps: int = 20, graph: bool = True) -> tuple[float, str]:
    """Median milliseconds per call of the callables in `fns` (called in turn), and how it was timed."""
    for f in fns:  # warm-up: module load, autotuning, allocator
        f()
    torch.cuda.synchronize()
    how = "graph"
    run = None
    if graph:
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for f in fns:
                    f()
            torch.cuda.current_stream().wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                for f in fns:
                    f()
            run = g.replay
        except Exception as e:  # report, then time eagerly
            how = f"eager (graph capture failed: {type(e).__name__}: {str(e).splitlines()[0][:80]})"
            torch.cuda.synchronize()
    if run is None:
        if how == "graph":
            how = "eager"

        def run():
            for f in fns:
                f()
    run()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / len(fns))
    return statistics.median(times), how


def copies_for(nbytes: int, factor: float = 4.0, cap: int = 64) -> int:
    """How many copies of an nbytes buffer exceed `factor` times the L2 (so every read is cold)."""
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20) or (50 << 20)
    return max(2, min(cap, math.ceil(factor * l2 / nbytes) + 1))


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy, GB/s counting bytes read + bytes written."""
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms, _ = time_calls([lambda: dst.copy_(src)], reps=30, graph=False)
    return 2 * nbytes / (ms * 1e-3) / 1e9


# ----------------------------------------------------------------------------------------------- data


def random_packed(m: int, n: int, K: int, copies: int = 1):
    tiles = (m // 16) * (n // 16)
    return [torch.randint(-(2**15), 2**15, (tiles, 16 * K), dtype=torch.int16, device="cuda") for _ in range(copies)]


def hyb_tlut():
    import qtip_ops

    return qtip_ops.default_hyb_tlut().to(device="cuda", dtype=torch.float16)


# ----------------------------------------------------------------------------------------------- sections


def check_correctness(tlut) -> list[str]:
    """gemv vs decode_weight + fp32 matmul on one shape, every dtype and path; returns failure lines."""
    import qtip_ops

    fails = []
    m, n = 256, 4096 + 16 * 7  # n not a multiple of 256: partial chunks
    for K in (2, 3):
        packed = random_packed(m, n, K)[0]
        w = qtip_ops.decode_weight(packed, m, n, L, K, V, MODE, tlut)
        for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 2e-2)):
            for rows in (1, 3, 9, 64, 65, 200):
                x = torch.randn(rows, n, device="cuda").to(dtype)
                ref = x.double() @ w.double().T
                y = qtip_ops.gemv(x, packed, m, n, L, K, V, MODE, tlut)
                err = ((y.double() - ref).norm() / ref.norm()).item()
                if not (err < tol):
                    fails.append(f"K={K} {dtype} rows={rows}: rel err {err:.2e} > {tol:.0e}")
    return fails


def bench_batch1(copy_bw: float, tlut, quick: bool):
    import qtip_ops

    rows = []
    shapes = SHAPES[:2] if quick else SHAPES
    for m, n in shapes:
        lin_copies = copies_for(m * n * 2)
        ws = [torch.randn(m, n, device="cuda", dtype=torch.float16) for _ in range(lin_copies)]
        xh = torch.randn(1, n, device="cuda", dtype=torch.float16)
        t_lin, how_lin = time_calls([lambda w=w: F.linear(xh, w) for w in ws])
        del ws
        for K in BITS:
            nbytes = m * n * K // 8
            packs = random_packed(m, n, K, copies_for(nbytes))
            xf = xh.float()
            t16, how = time_calls([lambda p=p: qtip_ops.gemv(xh, p, m, n, L, K, V, MODE, tlut) for p in packs])
            t32, _ = time_calls([lambda p=p: qtip_ops.gemv(xf, p, m, n, L, K, V, MODE, tlut) for p in packs])
            gbs = nbytes / (t16 * 1e-3) / 1e9
            rows.append(dict(m=m, n=n, K=K, gemv_fp16x_us=t16 * 1e3, gemv_fp32x_us=t32 * 1e3, stream_GBs=gbs,
                             frac_copy=gbs / copy_bw, linear_fp16_us=t_lin * 1e3, speedup=t_lin / t16,
                             speedup_fp32x=t_lin / t32, timing=how if how == how_lin else f"{how}/{how_lin}"))
            del packs
    return rows


def bench_batches(tlut, quick: bool):
    import qtip_ops

    m, n, K = (8192, 8192, 2)
    out = []
    packs = random_packed(m, n, K, copies_for(m * n * K // 8))
    ws = [torch.randn(m, n, device="cuda", dtype=torch.float16) for _ in range(copies_for(m * n * 2))]
    for B in (BATCHES[:5] if quick else BATCHES):
        x = torch.randn(B, n, device="cuda", dtype=torch.float16)
        xf = x.float()
        t_q, _ = time_calls([lambda p=p: qtip_ops.gemv(x, p, m, n, L, K, V, MODE, tlut) for p in packs])
        t_l, _ = time_calls([lambda w=w: F.linear(x, w) for w in ws])
        t_d, _ = time_calls([lambda p=p: F.linear(x, qtip_ops.decode_weight(p, m, n, L, K, V, MODE, tlut).half())
                             for p in packs[:2]], reps=5)
        t_q32, _ = time_calls([lambda p=p: qtip_ops.gemv(xf, p, m, n, L, K, V, MODE, tlut) for p in packs])
        out.append(dict(batch=B, gemv_us=t_q * 1e3, gemv_fp32x_us=t_q32 * 1e3, linear_fp16_us=t_l * 1e3,
                        decode_then_matmul_us=t_d * 1e3, vs_linear=t_l / t_q, vs_decode_matmul=t_d / t_q))
    return dict(m=m, n=n, K=K, rows=out)


class Block(torch.nn.Module):
    """The linear layers of one Llama-2-7B decoder layer, chained so that shapes compose (no attention)."""

    def __init__(self, make):
        super().__init__()
        d, f = 4096, 11008
        self.q, self.k, self.v, self.o = make(d, d), make(d, d), make(d, d), make(d, d)
        self.gate, self.up, self.down = make(f, d), make(f, d), make(d, f)  # make(out, in)

    def forward(self, h):
        h = h + self.o(self.q(h) + self.k(h) + self.v(h))
        return h + self.down(F.silu(self.gate(h)) * self.up(h))


def bench_tokens(quick: bool):
    import qtip_ops
    from qtip_ops.nn import QTIPLinear

    layers = 4 if quick else 32
    results = {}
    tlut = qtip_ops.default_hyb_tlut().half()

    def qtip_linear(K):
        def make(out_f, in_f):
            lin = QTIPLinear(in_f, out_f, L=L, K=K, V=V, mode=MODE, device="cuda")
            lin.trellis.copy_(torch.randint(-(2**15), 2**15, lin.trellis.shape, dtype=torch.int16))
            lin.SU.copy_(torch.randn(in_f).sign())
            lin.SV.copy_(torch.randn(out_f).sign() * (1.0 / math.sqrt(in_f)))
            lin.tlut.copy_(tlut)
            return lin
        return make

    def fp16_linear(out_f, in_f):
        lin = torch.nn.Linear(in_f, out_f, bias=False, device="cuda", dtype=torch.float16)
        torch.nn.init.normal_(lin.weight, std=1.0 / math.sqrt(in_f))
        return lin

    configs = [("fp16", fp16_linear)] + [(f"qtip K={K}", qtip_linear(K)) for K in BITS]
    if not torch._C._dispatch_has_kernel_for_dispatch_key("qtip::rht", "CUDA"):
        print("  note: qtip::rht has no CUDA kernel in this build; QTIPLinear stacks are skipped")
        configs = configs[:1]
    for name, make in configs:
        model = torch.nn.Sequential(*[Block(make) for _ in range(layers)]).eval()
        x = torch.randn(1, 4096, device="cuda", dtype=torch.float16)
        entry = {}
        for label, fn in (("eager", model), ("compiled", None)):
            try:
                if fn is None:
                    torch._dynamo.reset()
                    fn = torch.compile(model, mode="reduce-overhead", fullgraph=True)
                with torch.no_grad():
                    for _ in range(3):
                        fn(x)
                    torch.cuda.synchronize()
                    iters = 20 if quick else 50
                    t0 = time.perf_counter()
                    for _ in range(iters):
                        fn(x)
                    torch.cuda.synchronize()
                    entry[label] = iters / (time.perf_counter() - t0)
            except Exception as e:
                entry[label] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}"
        results[name] = entry
        del model
        torch.cuda.empty_cache()
    return dict(layers=layers, tokens_per_s=results)


# ----------------------------------------------------------------------------------------------- main


def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer shapes / batches / layers")
    ap.add_argument("--json", help="also write every number to this file")
    ap.add_argument("--skip", nargs="*", default=[], choices=["batch1", "batches", "tokens"])
    args = ap.parse_args()
    why = _have_gpu_kernels()
    if why:
        print(f"gpu_bench: nothing to measure: {why}")
        return 0
    torch.manual_seed(0)
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name}, {props.multi_processor_count} SMs, L2 {props.L2_cache_size >> 20} MiB, "
          f"torch {torch.__version__}")
    report = {"device": props.name}
    tlut = hyb_tlut()

    fails = check_correctness(tlut)
    print("correctness (gemv vs decode_weight @ x, fp32/fp16/bf16, rows 1..200):",
          "OK" if not fails else "FAILED\n  " + "\n  ".join(fails))
    report["correctness_failures"] = fails

    bw = copy_bandwidth()
    report["copy_GBs"] = bw
    print(f"\ndevice copy bandwidth (read + write): {bw:.0f} GB/s")

    if "batch1" not in args.skip:
        rows = bench_batch1(bw, tlut, args.quick)
        report["batch1"] = rows
        print(f"\nbatch 1, {MODE} L={L} V={V}, cold L2; GB/s = packed weight bytes / time (fp16 x)")
        hdr = ("m", "n", "K", "gemv us", "fp32x us", "GB/s", "of copy", "fp16 lin us", "speed-up", "(fp32x)")
        print("%6s %6s %2s %9s %9s %7s %8s %11s %8s %8s" % hdr)
        for r in rows:
            print("%6d %6d %2d %9.1f %9.1f %7.0f %7.0f%% %11.1f %7.2fx %7.2fx" % (
                r["m"], r["n"], r["K"], r["gemv_fp16x_us"], r["gemv_fp32x_us"], r["stream_GBs"],
                100 * r["frac_copy"], r["linear_fp16_us"], r["speedup"], r["speedup_fp32x"]))
        print("timing:", rows[0]["timing"] if rows else "-")

    if "batches" not in args.skip:
        sweep = bench_batches(tlut, args.quick)
        report["batches"] = sweep
        print(f"\nbatch sweep, {sweep['m']}x{sweep['n']} K={sweep['K']} (fp16 x unless noted), cold L2")
        print("%6s %9s %11s %11s %14s %10s %14s" % ("batch", "gemv us", "fp32x us", "fp16 lin us",
                                                  "decode+mm us", "vs linear", "vs decode+mm"))
        for r in sweep["rows"]:
            print("%6d %9.1f %11.1f %11.1f %14.1f %9.2fx %13.2fx" % (
                r["batch"], r["gemv_us"], r["gemv_fp32x_us"], r["linear_fp16_us"], r["decode_then_matmul_us"],
                r["vs_linear"], r["vs_decode_matmul"]))

    if "tokens" not in args.skip:
        tok = bench_tokens(args.quick)
        report["tokens"] = tok
        print(f"\nLlama-2-7B-shaped stack ({tok['layers']} layers, linear layers only), batch 1, tokens/s")
        print("%12s %10s %22s" % ("weights", "eager", "compile(reduce-overhead)"))
        for name, e in tok["tokens_per_s"].items():
            print("%12s %10s %22s" % (name, fmt(e.get("eager"), ".1f"), fmt(e.get("compiled"), ".1f")))

    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
