"""`python -m qtip_ops.export SRC DST`: one CLI for model conversions (argument parsing over qtip_ops.formats
and qtip_ops.aoti). The direction is read from SRC and from DST's form; see `--help`."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

PROG = "python -m qtip_ops.export"

DESCRIPTION = """\
Convert a QTIP-quantized model between containers. The direction is read from SRC (what it is) and from
DST's form (a name ending in .gguf, a name ending in .pt2, anything else: a directory).

  SRC                                   DST        what happens
  reference QTIP checkpoint directory   directory  import into a qtip_ops quantized directory (trellises
    (config.json with quip_params,                 repacked into our layout; detected from quip_params,
     or forced with --from reference)              or forced with --from reference)
  .gguf written by qtip_ops             directory  unpack into a quantized directory (config.json,
                                                   model.safetensors, tokenizer)
  qtip_ops quantized directory          .gguf      pack into one GGUF file (plain I16/F16 tensors,
                                                   QTIP parameters under qtip.* keys; export/FORMAT.md)
  quantized directory, .gguf or         .pt2       torch.export + AOTInductor package of the whole decoder:
    reference directory                            input_ids (batch, seq) -> logits, no KV cache; batch
                                                   and sequence length dynamic unless --seq-len/--static

A quantized directory is what `python -m qtip_ops.quantize ... --out DIR` or `save_pretrained` of a model
loaded with AutoModelForCausalLM writes (config.json with quantization_config.quant_method = "qtip").
Outputs are written to a temporary path and renamed: a failed conversion leaves nothing behind. On failure
the exit status is 1 (2 for bad arguments) with a one-line error on stderr."""

EPILOG = """\
examples:
  python -m qtip_ops.export ref-llama-2bit/ llama-qtip/                 # reference checkpoint -> our directory
  python -m qtip_ops.export ref-llama-2bit/ llama-qtip/ --from reference
  python -m qtip_ops.export smollm2-qtip/ smollm2-qtip.gguf             # directory -> GGUF
  python -m qtip_ops.export smollm2-qtip.gguf smollm2-qtip/             # GGUF -> directory
  python -m qtip_ops.export smollm2-qtip/ smollm2.pt2                   # AOTInductor package, dynamic shapes
  python -m qtip_ops.export smollm2-qtip/ smollm2-s64.pt2 --seq-len 64  # fixed sequence length 64
  python -m qtip_ops.export smollm2-qtip.gguf smollm2.pt2 --static --seq-len 32

run a package: python export/run_pt2.py smollm2.pt2 --ids 1 2 3   (or the C++ runner: export/README.md)"""

KINDS = ("auto", "reference", "qtip", "gguf")


class CLIError(Exception):
    """A user-facing error with its one-line message."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="SRC", help="source: a model directory or a .gguf file")
    p.add_argument("dst", metavar="DST", help="destination: a directory, a .gguf file or a .pt2 package")
    p.add_argument("--from", dest="src_kind", choices=KINDS, default="auto",
                   help="what SRC is (default: detected; 'reference' for a reference QTIP checkpoint, 'qtip' for "
                        "a qtip_ops quantized directory, 'gguf' for a .gguf file)")
    p.add_argument("--seq-len", type=int, default=None, metavar="N",
                   help=".pt2 only: fix the sequence length to N (default: dynamic, up to max_position_embeddings)")
    p.add_argument("--static", action="store_true",
                   help=".pt2 only: fix the batch to 1 and the sequence length (to --seq-len, default 16)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar (shown when stderr is a terminal) and no summary line")
    p.add_argument("--traceback", action="store_true", help="show the full traceback on failure")
    return p


# ------------------------------------------------------------------------------------------ detection


def _is_qtip_dir(path: Path) -> bool:
    from .models import is_quantized_dir

    try:
        return path.is_dir() and is_quantized_dir(path)
    except ValueError:  # unreadable config.json
        return False


def _is_reference_dir(path: Path) -> bool:
    try:
        from .formats.reference import is_reference_dir
    except ImportError:
        return False
    return is_reference_dir(path)


def source_kind(src: Path, forced: str = "auto") -> str:
    """'qtip', 'reference' or 'gguf' (raises CLIError for anything else)."""
    if not src.exists():
        raise CLIError(f"{src} does not exist")
    if src.is_file():
        if src.suffix == ".pt2":
            raise CLIError(f"{src} is an AOTInductor package (a compiled program): it cannot be converted back")
        if src.suffix == ".gguf" and forced in ("auto", "gguf"):
            return "gguf"
        raise CLIError(f"{src} is a file but not a .gguf (a model directory or a .gguf is expected)"
                       if forced in ("auto", "gguf") else f"--from {forced} needs a directory, {src} is a file")
    if forced == "gguf":
        raise CLIError(f"--from gguf needs a .gguf file, {src} is a directory")
    if forced == "reference" or (forced == "auto" and not _is_qtip_dir(src) and _is_reference_dir(src)):
        return "reference"
    if _is_qtip_dir(src):
        return "qtip"
    if (src / "config.json").is_file():
        raise CLIError(f"{src} is neither a qtip_ops quantized directory (no quantization_config with quant_method "
                       f"'qtip') nor a reference QTIP checkpoint (no quip_params); quantize it first: "
                       f"python -m qtip_ops.quantize {src} --out DIR")
    raise CLIError(f"{src} is not a model directory (no config.json)")


def dest_kind(dst: Path) -> str:
    return {".gguf": "gguf", ".pt2": "pt2"}.get(dst.suffix, "dir")


# ----------------------------------------------------------------------------------------- conversions


def _formats(name: str):
    try:
        if name == "gguf":
            from .formats import gguf as module
        else:
            from .formats import reference as module
    except ImportError as err:
        raise CLIError(f"the {name} converter is not available: {err}") from None
    return module


def _to_qtip_dir(src: Path, kind: str, scratch: Path, step) -> Path:
    """SRC as a quantized directory (converted into `scratch` when it is not one already)."""
    if kind == "qtip":
        return src
    out = scratch / "model"
    if kind == "gguf":
        step(f"unpack {src.name}")
        return Path(_formats("gguf").read_gguf(src, out))
    step(f"import reference {src.name}")
    return Path(_formats("reference").convert_reference(src, out))


def plan(kind: str, dst_kind: str) -> list[str]:
    """The stages of a conversion (for the progress bar)."""
    stages = {"qtip": [], "gguf": ["unpack"], "reference": ["import"]}[kind]
    if dst_kind == "dir":
        return stages
    if dst_kind == "gguf":
        return stages + ["write gguf"]
    return stages + ["load", "export", "compile"]


def convert(src: Path, dst: Path, kind: str, seq_len: int | None = None, static: bool = False, step=None) -> Path:
    step = step or (lambda name: None)
    check(src, dst, kind, seq_len, static)
    if dest_kind(dst) == "dir":
        return _convert_to_dir(src, dst, kind, step)
    with tempfile.TemporaryDirectory(prefix="qtip-export-") as scratch:
        qdir = _to_qtip_dir(src, kind, Path(scratch), step)
        if dest_kind(dst) == "gguf":
            step(f"write {dst.name}")
            return Path(_formats("gguf").write_gguf(qdir, dst))
        from .aoti import export_decoder

        step(f"load {qdir.name if kind == 'qtip' else src.name}")
        return export_decoder(qdir, dst, seq_len=seq_len, dynamic=not static, progress=step)


def _convert_to_dir(src: Path, dst: Path, kind: str, step) -> Path:
    if kind == "gguf":
        step(f"unpack {src.name}")
        return Path(_formats("gguf").read_gguf(src, dst))
    step(f"import reference {src.name}")
    return Path(_formats("reference").convert_reference(src, dst))


# -------------------------------------------------------------------------------------------------- main


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split("Exception raised from")[0].split()) or type(err).__name__  # no C++ backtrace
    if not isinstance(err, (CLIError, ValueError, OSError)):
        text = f"{type(err).__name__}: {text}"
    return text if len(text) <= 1000 else text[:997] + "..."


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def check(src: Path, dst: Path, kind: str, seq_len: int | None, static: bool) -> None:
    """Refuses argument combinations that convert nothing, before any work starts."""
    dkind = dest_kind(dst)
    if dkind != "pt2" and (seq_len is not None or static):
        raise CLIError("--seq-len and --static apply to .pt2 outputs only")
    if seq_len is not None and seq_len < 1:
        raise CLIError(f"--seq-len must be >= 1, got {seq_len}")
    if src.resolve() == dst.resolve():
        raise CLIError("SRC and DST are the same path")
    if dkind == "dir" and kind == "qtip":
        raise CLIError(f"{src} is already a qtip_ops quantized directory: nothing to convert (for another "
                       "container give DST a .gguf or .pt2 name)")
    if dkind == "dir" and dst.is_file():
        raise CLIError(f"{dst} is a file; a directory destination is expected")
    if dkind == "gguf" and kind == "gguf":
        raise CLIError(f"{src} is already a .gguf: nothing to convert")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    src, dst = Path(args.src), Path(args.dst)
    start = time.perf_counter()
    try:
        with ExitStack() as stack:
            kind = source_kind(src, args.src_kind)
            check(src, dst, kind, args.seq_len, args.static)
            bar = None
            if not args.quiet and sys.stderr.isatty():  # a bar only on a terminal: piped stderr stays one line
                from tqdm.auto import tqdm

                stages = plan(kind, dest_kind(dst))
                bar = stack.enter_context(tqdm(total=len(stages), desc=f"{kind} -> {dest_kind(dst)}", unit="step",
                                               file=sys.stderr, leave=False,
                                               bar_format="{desc}: {n_fmt}/{total_fmt} [{elapsed}]{postfix}"))
            started = []

            def step(name: str) -> None:
                if bar is None:
                    return
                if started:
                    bar.update()
                started.append(name)
                bar.set_postfix_str(name)

            out = convert(src, dst, kind, args.seq_len, args.static, step)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every failure becomes one line (and a non-zero exit)
        if args.traceback:
            raise
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"wrote {out} ({_size(out) / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
