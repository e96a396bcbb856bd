"""torch.export + AOTInductor packaging of a whole quantized decoder: input_ids (batch, seq) int64 -> logits
(batch, seq, vocab) float32, no KV cache (use_cache=False).

The package is a `.pt2` that runs without the model's Python code: in Python, `import qtip_ops` (which loads the
op library) then `torch._inductor.aoti_load_package(path)`; in C++, `torch::inductor::AOTIModelPackageLoader`
in a process that loaded the `qtip_ops_cpu` library (export/runner). The `qtip::*` ops stay single nodes in the
graph; AOTInductor calls them through the dispatcher, so the process needs their schemas and kernels, nothing
else.

Shapes: by default the batch and the sequence length are symbolic (torch.export.Dim), the sequence up to the
model's max_position_embeddings. When the model's code does not export with a symbolic sequence length, the
sequence length is fixed (to `seq_len`, default 16) and the batch alone stays dynamic; `dynamic=False` fixes
both. What was chosen is stored in the package's metadata (`qtip.seq_len`: "dynamic" or the length;
`qtip.batch`: "dynamic" or the batch), readable with `package_metadata(path)` or the loader's get_metadata().
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

DEFAULT_SEQ_LEN = 16  # the example (or fixed) length
MAX_BATCH = 1024


class DecoderLogits(nn.Module):
    """input_ids -> logits of a Hugging Face causal LM, without a KV cache (the exported signature)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


def _load(model):
    if isinstance(model, (str, os.PathLike)):
        from .models import load_model

        model, _ = load_model(model)
    return model


def _max_positions(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    value = getattr(config, "max_position_embeddings", None) if config is not None else None
    return int(value) if value else 4096


def export_program(model: nn.Module, seq_len: int | None = None, dynamic: bool = True,
                   batch: int = 1) -> tuple[torch.export.ExportedProgram, dict[str, str]]:
    """(ExportedProgram of input_ids -> logits, metadata). See the module docstring for the shape rules."""
    wrapper = DecoderLogits(model).eval()
    max_seq = _max_positions(model)
    length = min(DEFAULT_SEQ_LEN, max_seq) if seq_len is None else int(seq_len)
    if not 1 <= length <= max_seq:
        raise ValueError(f"seq_len must be in [1, {max_seq}] (max_position_embeddings), got {length}")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None) or 2
    batch_dim = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    attempts = []
    if dynamic:
        if seq_len is None:
            # A symbolic length: trace with 2 rows of min(16, max) tokens (not 1: 0/1 would specialize).
            attempts.append(({0: batch_dim, 1: torch.export.Dim("seq", min=1, max=max_seq)}, 2, length))
        attempts.append(({0: batch_dim}, 2, length))
    attempts.append((None, batch, length))
    errors = []
    for shapes, rows, cols in attempts:
        example = torch.randint(0, int(vocab), (rows, cols), generator=torch.Generator().manual_seed(0))
        try:
            with torch.no_grad():
                ep = torch.export.export(wrapper, (example,), dynamic_shapes=None if shapes is None else (shapes,),
                                         strict=False)
        except Exception as err:  # transformers code that cannot take a symbolic size: fall back to fixed
            if shapes is None:
                raise
            errors.append(f"{err}".splitlines()[0])
            log.warning("qtip_ops.aoti: export with dynamic dims %s failed (%s); trying fewer", list(shapes),
                        errors[-1])
            continue
        meta = {
            "qtip.signature": "input_ids[int64 (batch, seq)] -> logits[float (batch, seq, vocab)]",
            "qtip.seq_len": "dynamic" if shapes is not None and 1 in shapes else str(cols),
            "qtip.batch": "dynamic" if shapes is not None else str(rows),
            "qtip.max_seq_len": str(max_seq),
            "qtip.vocab_size": str(vocab),
        }
        return ep, meta
    raise RuntimeError("export failed: " + "; ".join(errors))  # not reached: the static attempt raises


def export_decoder(model: nn.Module | str | os.PathLike, path: str | os.PathLike, seq_len: int | None = None,
                   dynamic: bool = True, progress=None) -> Path:
    """Packages `model` (a causal LM, or a path load_model accepts) as an AOTInductor `.pt2` at `path`.

    seq_len=None, dynamic=True: batch and sequence length symbolic (fallback: fixed length 16).
    seq_len=N, dynamic=True: length fixed to N, batch symbolic.  dynamic=False: (1, seq_len or 16) fixed.
    Written to a temporary file beside `path` and renamed, so a failed compile leaves nothing behind.
    `progress(stage: str)` is called before each stage ("export", "compile")."""
    path = Path(path)
    if path.suffix != ".pt2":
        raise ValueError(f"an AOTInductor package path must end in .pt2, got {path}")
    model = _load(model)
    if not any(type(m).__name__ == "QTIPLinear" for m in model.modules()):
        log.warning("qtip_ops.aoti: %s has no QTIPLinear layers; packaging it unquantized", type(model).__name__)
    model.eval()
    if progress:
        progress("export")
    start = time.perf_counter()
    ep, meta = export_program(model, seq_len, dynamic)
    log.info("qtip_ops.aoti: exported in %.1f s (%s)", time.perf_counter() - start, meta)
    if progress:
        progress("compile")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".pt2", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():  # torch-internal deprecation noise from pickling the call spec
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            torch._inductor.aoti_compile_and_package(ep, package_path=tmp,
                                                     inductor_configs={
                                                         "aot_inductor.metadata": meta,
                                                         # the runtime input checks (AOTI_RUNTIME_CHECK_INPUTS=1)
                                                         # accept batch/length 1, which the export allows
                                                         "aot_inductor.check_lowerbound": False})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def package_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata stored in a package (the qtip.* keys above and AOTInductor's own)."""
    return dict(torch._inductor.aoti_load_package(str(path)).get_metadata())


def check_input_ids(meta: dict[str, str], ids: torch.Tensor) -> None:
    """Raises ValueError when `ids` does not fit the package (its qtip.* metadata): AOTInductor itself does not
    check input shapes (only with AOTI_RUNTIME_CHECK_INPUTS=1) and would read out of bounds."""
    if ids.dim() != 2 or ids.dtype != torch.int64:
        raise ValueError(f"input_ids must be a (batch, seq) int64 tensor, got {tuple(ids.shape)} {ids.dtype}")
    batch, seq = ids.shape
    if meta.get("qtip.batch", "dynamic") != "dynamic" and batch != int(meta["qtip.batch"]):
        raise ValueError(f"this package was exported for batch {meta['qtip.batch']}, got {batch} sequences")
    if meta.get("qtip.seq_len", "dynamic") != "dynamic" and seq != int(meta["qtip.seq_len"]):
        raise ValueError(f"this package was exported for sequences of {meta['qtip.seq_len']} tokens, got {seq}")
    if "qtip.max_seq_len" in meta and not 1 <= seq <= int(meta["qtip.max_seq_len"]):
        raise ValueError(f"sequence length must be in [1, {meta['qtip.max_seq_len']}], got {seq}")
    if batch < 1:
        raise ValueError("input_ids has no sequences")
    if "qtip.vocab_size" in meta and ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < int(
            meta["qtip.vocab_size"]):
        raise ValueError(f"token ids must be in [0, {meta['qtip.vocab_size']}), got [{int(ids.min())}, "
                         f"{int(ids.max())}]")


def load_package(path: str | os.PathLike):
    """A callable input_ids -> logits from a `.pt2` written by export_decoder (loads the qtip ops first)."""
    from . import _library

    _library.load()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"AOTInductor package {path} does not exist")
    return torch._inductor.aoti_load_package(str(path))
