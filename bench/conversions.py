"""Times every container conversion of a quantized model and checks what survives it: the maximum logit
difference against the source directory after each round trip.

    python bench/conversions.py qtip-report/qtip-hyb-L12-K2     # the main job's K=2 output

Conversions run through `python -m qtip_ops.export` in fresh processes (what a user pays, imports included):
directory -> GGUF -> directory, directory -> .pt2 (then run by export/run_pt2.py in a fresh process), and
AutoModelForCausalLM.from_pretrained in fp32 against qtip_ops' own loader.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

_ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def export(src: Path, dst: Path) -> float:
    return timed([sys.executable, "-m", "qtip_ops.export", str(src), str(dst), "-q"])


@torch.no_grad()
def logits(directory: Path, ids: torch.Tensor) -> torch.Tensor:
    from qtip_ops.models import load_model

    model, _ = load_model(directory)
    return model.eval()(ids).logits


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="a qtip_ops quantized directory")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM

    import qtip_ops  # noqa: F401  (registers the "qtip" quantization method)

    ids = torch.randint(0, 1000, (1, 24), generator=torch.Generator().manual_seed(0))
    base = logits(args.model, ids)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        to_gguf, from_gguf = export(args.model, tmp / "m.gguf"), export(tmp / "m.gguf", tmp / "back")
        diff = (logits(tmp / "back", ids) - base).abs().max().item()
        rows.append(["dir -> .gguf -> dir", f"{to_gguf:.1f} s + {from_gguf:.1f} s",
                     f"{(tmp / 'm.gguf').stat().st_size / 2**20:.1f} MiB", f"{diff:.3g}"])
        with torch.no_grad():
            hf = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()(ids).logits
        rows.append(["from_pretrained (fp32)", "-", "-", f"{(hf - base).abs().max().item():.3g}"])
        to_pt2 = export(args.model, tmp / "m.pt2")
        torch.save(ids, tmp / "ids.pt")
        run = timed([sys.executable, str(_ROOT / "export" / "run_pt2.py"), str(tmp / "m.pt2"), "--tensor",
                     str(tmp / "ids.pt"), "--out", str(tmp / "out.pt")])
        diff = (torch.load(tmp / "out.pt") - base).abs().max().item()
        rows.append(["dir -> .pt2, run in a fresh process", f"{to_pt2:.1f} s + {run:.1f} s",
                     f"{(tmp / 'm.pt2').stat().st_size / 2**20:.0f} MiB", f"{diff:.3g}"])
    print(f"\n### conversions of {args.model} (max |logit| {base.abs().max().item():.1f})\n")
    print("| conversion | time | size | max logit difference |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
