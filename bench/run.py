"""Prints the CPU ratio tables of qtip_ops, every baseline measured in the same run on the same machine.

    python bench/run.py            # all tables (about 20 minutes on 2 cores, most of it the model quantization)
    python bench/run.py --quick    # 4096x4096 only, fewer Viterbi tiles, no model quantization
    python bench/run.py --only model --path avx2   # one table, on the AVX2 kernels

Tables: gemv (HYB, L=16, K=2,3,4) against torch F.linear in fp32 and bf16; the peak memory a gemv call adds
against the dense weight's size; viterbi_quantize tiles/s against reference.py; rht against a dense matmul by
Had_n; and the end-to-end quantization of the bundled SmolLM2.
Ratios > 1 mean qtip_ops is faster. Timings are medians of repeated calls, so a busy machine shows up as
noise, not as a bias of one side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(1, os.path.dirname(_HERE))  # this checkout's qtip_ops before any installed one

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import qtip_ops  # noqa: E402
from qtip_ops import reference  # noqa: E402
from common import GEMV_BATCHES, GEMV_SHAPES, KS, L, RHT_SIZES, gaussian_tiles, hyb_code, packed_weight, seconds  # noqa: E402


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    sys.stdout.flush()


def bench_gemv(shapes) -> None:
    c = hyb_code()
    rows = []
    for m, n in shapes:
        w32 = torch.randn(m, n)
        w16 = w32.bfloat16()
        packed = {K: packed_weight(m, n, K) for K in KS}
        for batch in GEMV_BATCHES:
            x = torch.randn(batch, n)
            x16 = x.bfloat16()
            t32 = seconds(lambda: F.linear(x, w32))
            t16 = seconds(lambda: F.linear(x16, w16))
            cells = [f"{m}x{n}", str(batch), f"{t32 * 1e3:.2f}", f"{t16 * 1e3:.2f}"]
            for K in KS:
                tq = seconds(lambda: qtip_ops.gemv(x, packed[K], m, n, c["L"], K, c["V"], c["mode"], c["tlut"]))
                cells.append(f"{tq * 1e3:.2f} ({t32 / tq:.2f}x / {t16 / tq:.2f}x)")
            rows.append(cells)
    header = ["W (m x n)", "batch", "fp32 F.linear ms", "bf16 F.linear ms"]
    header += [f"qtip K={K} ms (vs fp32 / vs bf16)" for K in KS]
    table(f"gemv, HYB L=16 V=2, {torch.get_num_threads()} threads", header, rows)


def bench_viterbi(tiles: int) -> None:
    tlut = qtip_ops.default_hyb_tlut()
    rows = []
    threads = torch.get_num_threads()
    for mode, V in (("hyb", 2), ("1mad", 1)):
        t_tlut = tlut if mode == "hyb" else None
        for K in KS:
            x = gaussian_tiles(tiles, seed=K)
            ours = seconds(lambda: qtip_ops.viterbi_quantize(x, L, K, V, mode, t_tlut), min_time=0, min_reps=1)
            # CPU time per tile on one core: the cost that sets how long a model takes.
            torch.set_num_threads(1)
            one = x[: max(2, tiles // 4)]
            t0 = time.thread_time()
            qtip_ops.viterbi_quantize(one, L, K, V, mode, t_tlut)
            core_ms = (time.thread_time() - t0) / len(one) * 1e3
            torch.set_num_threads(threads)
            if mode == "hyb":
                ref_x = gaussian_tiles(8, seed=K)  # reference.py's own batch (chunk) of 8 sequences
                t0 = time.perf_counter()
                reference.viterbi_quantize(ref_x, L, K, V, mode, t_tlut)
                ref_rate = len(ref_x) / (time.perf_counter() - t0)
                ref_cells = [f"{ref_rate:.2f}", f"{tiles / ours / ref_rate:.0f}x"]
            else:
                ref_cells = ["-", "-"]
            rows.append([f"{mode} V={V}", str(K), f"{tiles / ours:.1f}", f"{core_ms:.2f}"] + ref_cells)
    header = ["code", "K", f"tiles/s ({threads} threads)", "CPU ms per tile (1 core)", "reference.py tiles/s",
              "speed-up"]
    table(f"viterbi_quantize, L=16, 256-weight tail-biting tiles ({tiles} per call)", header, rows)


def bench_rht() -> None:
    rows = []
    for n in RHT_SIZES:
        had = qtip_ops.hadamard_dense(n).float()
        s = torch.randn(n).sign()
        for batch in (1, 16):
            x = torch.randn(batch, n)
            tr = seconds(lambda: qtip_ops.rht(x, s))
            td = seconds(lambda: (x * s) @ had)
            rows.append([str(n), str(batch), f"{tr * 1e3:.3f}", f"{td * 1e3:.3f}", f"{td / tr:.1f}x"])
    table("rht against a dense matmul by Had_n (fp32)", ["n", "rows", "qtip rht ms", "dense ms", "speed-up"], rows)


def child_environment() -> dict:
    """The environment of a benchmark subprocess: this checkout's qtip_ops first, as in this process."""
    return dict(os.environ, PYTHONPATH=os.path.dirname(_HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))


_MEMORY_PROBE = """
import resource, sys, torch, qtip_ops
m, n, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
packed = torch.randint(-2**15, 2**15, ((m // 16) * (n // 16), 32), dtype=torch.int16)
x, tlut = torch.randn(batch, n), qtip_ops.default_hyb_tlut()
qtip_ops.gemv(x[:1, :16], packed[:1], 16, 16, 16, 2, 2, "hyb", tlut)  # load everything once
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
qtip_ops.gemv(x, packed, m, n, 16, 2, 2, "hyb", tlut)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def bench_memory() -> None:
    """Peak memory a gemv call adds (max RSS of a fresh process, after a warm-up call), against the size of the
    dense fp32 weight it stands for: fused batches must not allocate anything of the order of m*n."""
    m = n = 8192
    env = child_environment()
    rows = []
    for batch in (1, 16, 64, 65):
        out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(m), str(n), str(batch)], env=env,
                             capture_output=True, text=True, check=True)
        grown = int(out.stdout.strip().splitlines()[-1])
        rows.append([f"{m}x{n}", str(batch), "fused" if batch <= 64 else "decode + GEMM", f"{grown / 2**20:.1f}",
                     f"{m * n * 4 / 2**20:.0f}"])
    table("gemv peak memory growth (HYB K=2, fresh process)",
          ["W (m x n)", "batch", "path", "peak RSS growth MiB", "dense fp32 W MiB"], rows)


def bench_quantize_model() -> None:
    """End-to-end quantization of the bundled SmolLM2-135M at K=2, L=16 with the CLI's defaults (calibration
    included), in a fresh process: what `python -m qtip_ops.quantize` costs a user."""
    from qtip_ops.models import bundled_model_path

    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "qtip_ops.quantize", str(bundled_model_path()), "--bits", "2", "--L", str(L),
               "--out", out, "--quiet"]
        env = child_environment()
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    table(f"quantize SmolLM2-135M end to end (K=2, L={L}, HYB, CLI defaults)",
          ["threads", "layers", "mean proxy error", "minutes (wall, process)"],
          [[str(torch.get_num_threads()), str(result["layers"]), f"{result['mean_proxy_error']:.4f}",
            f"{wall / 60:.1f}"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4096x4096 only and fewer Viterbi tiles")
    parser.add_argument("--only", choices=["gemv", "memory", "viterbi", "rht", "model"], help="one table only")
    parser.add_argument("--path", choices=["auto", *qtip_ops.available_cpu_paths()], default="auto",
                        help="cap the CPU kernels (default: the fastest this CPU has)")
    args = parser.parse_args()
    qtip_ops.set_cpu_path(args.path)
    print(f"qtip_ops CPU kernels: {qtip_ops.cpu_path()} (this CPU: {', '.join(qtip_ops.available_cpu_paths())}); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.only in (None, "gemv"):
        bench_gemv(GEMV_SHAPES[:1] if args.quick else GEMV_SHAPES)
    if args.only in (None, "memory"):
        bench_memory()
    if args.only in (None, "viterbi"):
        bench_viterbi(8 if args.quick else 32)
    if args.only in (None, "rht"):
        bench_rht()
    if args.only == "model" or (args.only is None and not args.quick):
        bench_quantize_model()


if __name__ == "__main__":
    main()
