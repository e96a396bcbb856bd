"""The quantized-model directory: a Hugging Face layout (config.json with a `quantization_config` of
quant_method "qtip", model.safetensors, tokenizer files) whose QTIPLinear layers store `trellis`, `SU`,
`SV` and `tlut` (the reference checkpoint's tensor names). Written to a temporary directory and renamed,
so an interrupted save leaves nothing behind."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from .models import set_submodule
from .nn import QTIPLinear

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"


def quantization_config(model: nn.Module) -> dict:
    qlayers = {name: m for name, m in model.named_modules() if isinstance(m, QTIPLinear)}
    if not qlayers:
        raise ValueError("the model has no QTIPLinear layers to save")
    first = next(iter(qlayers.values()))
    return {
        "quant_method": "qtip",
        "format_version": FORMAT_VERSION,
        "L": first.L, "K": first.K, "V": first.V, "mode": first.mode,
        "tlut_shape": None if first.tlut is None else list(first.tlut.shape),
        "tile": 16,
        "quantized_modules": sorted(qlayers),
        "modules_to_not_convert": sorted(n for n, m in model.named_modules() if isinstance(m, nn.Linear)),
        "per_module": {name: {"K": m.K, "L": m.L, "V": m.V, "mode": m.mode} for name, m in qlayers.items()
                       if (m.K, m.L, m.V, m.mode) != (first.K, first.L, first.V, first.mode)},
    }


def _unique_tensors(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """State dict with tied tensors stored once and unquantized float tensors cast to `dtype`."""
    out, seen = {}, set()
    qtip_prefixes = tuple(f"{n}." for n, m in model.named_modules() if isinstance(m, QTIPLinear))
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.shape)
        if t.numel() and key in seen:
            continue
        seen.add(key)
        if t.is_floating_point() and not name.startswith(qtip_prefixes):
            t = t.to(dtype)
        out[name] = t.detach().contiguous().cpu()
    return out


def round_unquantized(model: nn.Module, dtype: torch.dtype) -> None:
    """Rounds the unquantized float parameters through `dtype` in place, so the model in memory computes
    exactly what save_quantized(dtype=...) stores."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, QTIPLinear):
                continue
            for p in module.parameters(recurse=False):
                p.copy_(p.to(dtype).to(p.dtype))


def save_quantized(model: nn.Module, out_dir: str | Path, tokenizer=None, dtype: torch.dtype = torch.float16) -> Path:
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        config = model.config.to_dict()
        config["quantization_config"] = quantization_config(model)
        # transformers reads "dtype" (v5) or "torch_dtype" (v4): declare the stored dtype under both.
        config["dtype"] = config["torch_dtype"] = str(dtype).removeprefix("torch.")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        save_file(_unique_tensors(model, dtype), str(tmp / WEIGHTS), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_quantized(path: str | Path, dtype: torch.dtype = torch.float32):
    """(model, tokenizer or None) from a directory written by save_quantized."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    raw = json.loads((path / "config.json").read_text())
    qconfig = raw.get("quantization_config")
    if not qconfig or qconfig.get("quant_method") != "qtip":
        raise ValueError(f"{path / 'config.json'} has no quantization_config with quant_method 'qtip'")
    if qconfig.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported qtip format_version {qconfig.get('format_version')!r}, "
                         f"expected {FORMAT_VERSION}")
    config = AutoConfig.from_pretrained(path)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    for name in qconfig["quantized_modules"]:
        linear = model.get_submodule(name)
        p = {"K": qconfig["K"], "L": qconfig["L"], "V": qconfig["V"], "mode": qconfig["mode"]}
        p.update(qconfig.get("per_module", {}).get(name, {}))
        shape = qconfig["tlut_shape"]
        layer = QTIPLinear(linear.in_features, linear.out_features, p["L"], p["K"], p["V"], p["mode"],
                           None if shape is None else tuple(shape), bias=linear.bias is not None)
        set_submodule(model, name, layer)
    tensors = load_file(str(path / WEIGHTS))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"{path / WEIGHTS}: missing tensors {sorted(set(missing) - tied)}, "
                         f"unexpected tensors {sorted(unexpected)}")
    model.tie_weights()
    model.eval()
    tokenizer = None
    if (path / "tokenizer_config.json").is_file() or (path / "tokenizer.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer
