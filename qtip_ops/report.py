"""`python -m qtip_ops.report`: the main job. Quantizes a causal LM (default: the bundled SmolLM2-135M) with
QTIP and with round-to-nearest at the same bits, and prints bits/weight, size on disk and perplexity on text
not used for calibration, next to the fp32 model, with the wall time of every stage and the peak memory.

Defaults are sized to finish in minutes on 2 CPU cores (L=12, K=2, 3 and 4, a small calibration set). The
paper's settings are `--L 16 --samples 256 --seqlen 2048` (hours on a CPU).
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import sys
import time
from pathlib import Path

import torch

from .checkpoint import round_unquantized, save_quantized
from .codes import MODES
from .eval import perplexity
from .models import bundled_model_path, decoder_layers, linear_layers, load_model
from .nn import QTIPLinear
from .quantize import CodeConfig, quantize_model, rtn_quantize
from .quantize.calibration import default_calibration_files, default_eval_files, random_windows, read_text, tokenize


class Stopwatch:
    def __init__(self):
        self.stages: dict[str, float] = {}

    def __call__(self, name: str):
        watch = self

        class _Stage:
            def __enter__(self):
                self.start = time.perf_counter()
                print(f"[{name}] ...", file=sys.stderr, flush=True)

            def __exit__(self, *exc):
                watch.stages[name] = time.perf_counter() - self.start
                print(f"[{name}] {watch.stages[name]:.1f}s", file=sys.stderr, flush=True)

        return _Stage()


def peak_memory_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def linear_weight_count(model) -> int:
    return sum(m.weight.numel() for layer in decoder_layers(model) for m in linear_layers(layer).values())


def rtn_bits_per_weight(model, bits: int) -> float:
    """K bits per weight plus one fp16 scale per output row of each linear."""
    linears = [m for layer in decoder_layers(model) for m in linear_layers(layer).values()]
    return bits + 16 * sum(m.out_features for m in linears) / sum(m.weight.numel() for m in linears)


def qtip_bits_per_weight(model) -> float:
    """Stored bits of the quantized linears (trellis, SU, SV, tlut) per weight they encode."""
    bits, weights = 0, 0
    for m in model.modules():
        if isinstance(m, QTIPLinear):
            weights += m.in_features * m.out_features
            bits += sum(t.numel() * t.element_size() * 8 for t in (m.trellis, m.SU, m.SV, m.tlut) if t is not None)
    return bits / weights


@torch.no_grad()
def apply_rtn(model, bits: int) -> None:
    for layer in decoder_layers(model):
        for linear in linear_layers(layer).values():
            linear.weight.copy_(rtn_quantize(linear.weight, bits))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qtip_ops.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="HF directory or .gguf (default: the bundled SmolLM2-135M-Instruct)")
    p.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4], help="K values (default 2 3 4)")
    p.add_argument("--L", type=int, default=12, help="trellis state bits (default 12; the paper uses 16)")
    p.add_argument("--mode", default="hyb", choices=MODES)
    p.add_argument("--samples", type=int, default=32, help="calibration windows (default 32)")
    p.add_argument("--seqlen", type=int, default=256, help="calibration window length (default 256)")
    p.add_argument("--eval-tokens", type=int, default=8192, help="evaluation tokens (default 8192)")
    p.add_argument("--ctx", type=int, default=512, help="evaluation window (default 512)")
    p.add_argument("--out", default="qtip-report", help="where the quantized models are written")
    p.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = p.parse_args(argv)

    watch = Stopwatch()
    with watch("load model"):
        model, tokenizer = load_model(args.model or bundled_model_path())
    with watch("tokenize text"):
        calib = random_windows(tokenize(tokenizer, read_text(default_calibration_files())), args.samples,
                               args.seqlen)
        evaluation = tokenize(tokenizer, read_text(default_eval_files()))[: args.eval_tokens]
    weights = linear_weight_count(model)
    rows = []
    with watch("perplexity fp32"):
        result = perplexity(model, evaluation, args.ctx)
    rows.append({"method": "fp32", "bits_per_weight": 32.0, "size_mib": None, **result})
    for k in args.bits:
        rtn = copy.deepcopy(model)
        apply_rtn(rtn, k)
        round_unquantized(rtn, torch.float16)
        with watch(f"perplexity RTN K={k}"):
            result = perplexity(rtn, evaluation, args.ctx)
        rows.append({"method": f"RTN {k}-bit", "bits_per_weight": rtn_bits_per_weight(model, k), "size_mib": None,
                     **result})
        del rtn
        qtip = copy.deepcopy(model)
        with watch(f"quantize QTIP K={k}"):
            reports = quantize_model(qtip, calib, CodeConfig(K=k, L=args.L, mode=args.mode))
        round_unquantized(qtip, torch.float16)
        out = Path(args.out) / f"qtip-{args.mode}-L{args.L}-K{k}"
        with watch(f"save QTIP K={k}"):
            save_quantized(qtip, out, tokenizer)
        with watch(f"perplexity QTIP K={k}"):
            result = perplexity(qtip, evaluation, args.ctx)
        rows.append({"method": f"QTIP {k}-bit ({args.mode}, L={args.L})", "bits_per_weight": qtip_bits_per_weight(qtip),
                     "size_mib": directory_bytes(out) / 2**20, "path": str(out),
                     "mean_proxy_error": sum(r.proxy_error for r in reports) / len(reports), **result})
        del qtip

    print(f"\n{Path(args.model or bundled_model_path()).name}: {weights / 1e6:.1f}M weights in decoder linears; "
          f"perplexity on {rows[0]['tokens']} held-out tokens (windows of {args.ctx})")
    print(f"{'method':<28} {'bits/weight':>11} {'size on disk':>13} {'perplexity':>11} {'tokens/s':>9}")
    for r in rows:
        size = f"{r['size_mib']:.1f} MiB" if r["size_mib"] is not None else "-"
        print(f"{r['method']:<28} {r['bits_per_weight']:>11.3f} {size:>13} {r['perplexity']:>11.2f} "
              f"{r['tokens_per_s']:>9.1f}")
    print("stages: " + ", ".join(f"{k} {v:.0f}s" for k, v in watch.stages.items()))
    print(f"peak memory: {peak_memory_mib():.0f} MiB")
    if args.json:
        print(json.dumps({"rows": rows, "stages": watch.stages, "peak_memory_mib": peak_memory_mib()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
