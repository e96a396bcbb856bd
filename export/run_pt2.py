"""Run an AOTInductor package of a QTIP-quantized decoder (`python -m qtip_ops.export DIR model.pt2`) in a fresh
Python process: `import qtip_ops` (registers the qtip ops), `torch._inductor.aoti_load_package`, one call on
the given token ids. Neither transformers nor the model's code is imported.

    python export/run_pt2.py model.pt2 --ids 1 2 3 4                 # one sequence
    python export/run_pt2.py model.pt2 --ids-file ids.txt            # one sequence per line (same lengths)
    python export/run_pt2.py model.pt2 --tensor ids.pt --out logits.pt
    python export/run_pt2.py model.pt2 --ids 1 2 3 --raw logits.f32  # raw little-endian float32 (batch, seq, vocab)

Prints the package's metadata, the logits' shape, the argmax token at every position and a checksum (the C++
runner in export/runner prints the same lines)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def read_ids(args) -> "torch.Tensor":
    import torch

    if args.ids is not None:
        rows = [args.ids]
    elif args.ids_file is not None:
        rows = [[int(t) for t in line.split()] for line in Path(args.ids_file).read_text().splitlines() if line.strip()]
    else:
        ids = torch.load(args.tensor)
        if not isinstance(ids, torch.Tensor):
            raise ValueError(f"{args.tensor} does not hold a tensor")
        return (ids[None] if ids.dim() == 1 else ids).to(torch.int64)
    if not rows or len({len(r) for r in rows}) != 1:
        raise ValueError("token ids: give at least one sequence, all of the same length")
    return torch.tensor(rows, dtype=torch.int64)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("package", help="the .pt2 written by python -m qtip_ops.export")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ids", type=int, nargs="+", help="token ids of one sequence")
    src.add_argument("--ids-file", help="text file: one sequence of token ids per line")
    src.add_argument("--tensor", help="torch.save'd int tensor (seq,) or (batch, seq)")
    p.add_argument("--out", help="torch.save the logits here")
    p.add_argument("--raw", help="write the logits here as raw float32")
    args = p.parse_args(argv)
    try:
        import torch

        import qtip_ops  # noqa: F401  (loads the op library the package calls)

        if not Path(args.package).is_file():
            raise FileNotFoundError(f"package {args.package} does not exist")
        from qtip_ops.aoti import check_input_ids

        ids = read_ids(args)
        os.environ.setdefault("AOTI_RUNTIME_CHECK_INPUTS", "1")  # the package's own shape checks, too
        start = time.perf_counter()
        runner = torch._inductor.aoti_load_package(args.package)
        loaded = time.perf_counter()
        check_input_ids(runner.get_metadata(), ids)
        with torch.no_grad():
            out = runner(ids)
        ran = time.perf_counter()
        logits = (out[0] if isinstance(out, (list, tuple)) else out).float().contiguous()
    except Exception as err:  # noqa: BLE001
        message = str(err).split("Exception raised from")[0]  # c10 errors append a C++ backtrace
        print(f"run_pt2: error: {' '.join(message.split())[:1000]}", file=sys.stderr)
        return 1
    meta = {k: v for k, v in runner.get_metadata().items() if k.startswith("qtip.")}
    print(f"package: {args.package} {meta}")
    print(f"input_ids: {ids.shape[0]} x {ids.shape[1]}")
    print(f"logits: {list(logits.shape)} float32")
    for b, row in enumerate(logits.argmax(-1).tolist()):
        print(f"argmax[{b}]: {' '.join(map(str, row))}")
    d = logits.double()
    print(f"checksum: sum={d.sum().item():.6f} abs_sum={d.abs().sum().item():.6f}")
    print(f"time: load {1e3 * (loaded - start):.1f} ms, run {1e3 * (ran - loaded):.1f} ms")
    if args.out:
        torch.save(logits, args.out)
        print(f"wrote {args.out}")
    if args.raw:
        logits.numpy().astype("<f4").tofile(args.raw)
        print(f"wrote {args.raw} ({logits.numel() * 4} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
