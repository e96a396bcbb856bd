"""transformers integration: the "qtip" quantization method.

After `import qtip_ops`, `AutoModelForCausalLM.from_pretrained(DIR)` loads a QTIP-quantized directory (written
by `qtip_ops.checkpoint.save_quantized` or by `save_pretrained` of a model loaded this way): transformers reads
`quantization_config` (`quant_method: "qtip"`) from config.json, builds a `QTIPConfig`, and `QTIPHfQuantizer`
swaps the listed `nn.Linear` modules for empty `QTIPLinear` shells before the weights (`trellis`, `SU`, `SV`,
`tlut`, `bias`) are loaded into them. The loaded model compiles (`torch.compile(fullgraph=True)`), exports and
generates like any other transformers model; `save_pretrained` writes the same layout back.

The config (all keys optional except `quant_method`):

    quant_method            "qtip"
    L, K, V, mode           the trellis code of every quantized linear (default L=16, K=2, V=2, "hyb")
    tlut_shape              shape of the stored codebook ([512, 2] for HYB; [2^L, V] for "lut"; null for the
                            computed codes)
    tile                    16 (the only tile size the kernels use)
    quantized_modules       the module names that are QTIPLinear; when absent, every nn.Linear that
                            `modules_to_not_convert` does not exclude (lm_head and tied output embeddings are
                            always excluded then)
    per_module              {name: {L, K, V, mode[, tlut_shape]}} for modules whose code differs
    modules_to_not_convert  linears that stay unquantized. With `quantized_modules`: names (or module prefixes)
                            removed from that list. Without: transformers' patterns (prefix at a module
                            boundary, regex, or suffix), e.g. ["down_proj"]
    format_version          1

Importing transformers costs seconds, so `import qtip_ops` does not do it: `install()` registers the method as
soon as transformers loads its quantizer registry (`transformers.quantizers.auto`), or right away when it
already has. `QTIPConfig` / `QTIPHfQuantizer` are created on first access (`qtip_ops.hf.QTIPConfig`). Without
transformers installed, nothing happens.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading

METHOD = "qtip"
FORMAT_VERSION = 1
TILE = 16
_REGISTRY_MODULE = "transformers.quantizers.auto"
_lock = threading.RLock()
_classes: dict[str, type] = {}


def default_tlut_shape(mode: str, L: int, V: int) -> list[int] | None:
    """The codebook shape a mode stores by default: HYB's 2^9 x 2 table, a 2^L x V LUT, or none."""
    if mode == "hyb":
        return [512, 2]
    if mode == "lut":
        return [1 << L, V]
    return None


def _define() -> dict[str, type]:
    """Creates the config and quantizer classes (needs transformers) and registers them; idempotent."""
    with _lock:
        if _classes:
            return _classes
        import torch
        from torch import nn
        from transformers.quantizers.auto import (AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING,
                                                  register_quantization_config, register_quantizer)
        from transformers.quantizers.base import HfQuantizer
        from transformers.quantizers.quantizers_utils import should_convert_module
        from transformers.utils.quantization_config import QuantizationConfigMixin

        from .codes import check_code
        from .models import set_submodule
        from .nn import QTIPLinear

        class QTIPConfig(QuantizationConfigMixin):
            """`quantization_config` of a QTIP-quantized model (see the module docstring for the keys)."""

            def __init__(self, L: int = 16, K: int = 2, V: int = 2, mode: str = "hyb",
                         tlut_shape: list[int] | None | str = "default", tile: int = TILE,
                         quantized_modules: list[str] | None = None, per_module: dict | None = None,
                         modules_to_not_convert: list[str] | None = None, format_version: int = FORMAT_VERSION,
                         **kwargs):
                self.quant_method = METHOD
                self.format_version = format_version
                self.L, self.K, self.V, self.mode = L, K, V, mode
                self.tlut_shape = default_tlut_shape(mode, L, V) if tlut_shape == "default" else (
                    None if tlut_shape is None else list(tlut_shape))
                self.tile = tile
                self.quantized_modules = None if quantized_modules is None else list(quantized_modules)
                self.per_module = dict(per_module or {})
                self.modules_to_not_convert = None if modules_to_not_convert is None else list(modules_to_not_convert)
                kwargs.pop("quant_method", None)
                for key, value in kwargs.items():  # keys of later format versions, kept for save_pretrained
                    setattr(self, key, value)
                self.post_init()

            def post_init(self):
                if self.format_version != FORMAT_VERSION:
                    raise ValueError(f"unsupported qtip format_version {self.format_version!r}, expected "
                                     f"{FORMAT_VERSION}")
                if self.tile != TILE:
                    raise ValueError(f"qtip tile size must be {TILE}, got {self.tile!r}")
                for name in ["", *self.per_module]:
                    L, K, V, mode, shape = self.code_for(name)
                    try:
                        check_code(L, K, V, mode, None if shape is None else torch.empty(shape, device="meta"))
                    except ValueError as err:
                        where = f"per_module[{name!r}]" if name else "quantization_config"
                        raise ValueError(f"qtip {where}: {err}") from None

            def code_for(self, name: str) -> tuple[int, int, int, str, list[int] | None]:
                """(L, K, V, mode, tlut_shape) of the module `name`."""
                p = self.per_module.get(name, {})
                L, K, V, mode = p.get("L", self.L), p.get("K", self.K), p.get("V", self.V), p.get("mode", self.mode)
                if "tlut_shape" in p:
                    shape = p["tlut_shape"]
                elif (mode, L, V) == (self.mode, self.L, self.V) or (mode == self.mode == "hyb"):
                    shape = self.tlut_shape
                else:
                    shape = default_tlut_shape(mode, L, V)
                return L, K, V, mode, shape

        class QTIPHfQuantizer(HfQuantizer):
            """Loads pre-quantized QTIP checkpoints: QTIPLinear shells in place of the quantized nn.Linear
            modules, filled by the normal weight loading. QTIP needs calibration (`python -m qtip_ops.quantize`),
            so it cannot quantize a float checkpoint while loading it."""

            requires_calibration = True
            quantization_config: QTIPConfig

            def validate_environment(self, device_map=None, **kwargs):
                from ._library import has_cuda_kernels

                devices = set(device_map.values()) if isinstance(device_map, dict) else {device_map}
                wants_cuda = any(str(d).startswith("cuda") or isinstance(d, int) or str(d) in ("auto", "balanced")
                                 for d in devices if d is not None)
                if wants_cuda and torch.cuda.is_available() and not has_cuda_kernels():
                    raise RuntimeError("qtip: this build of qtip_ops has no CUDA kernels; load the model on CPU "
                                       "(device_map=None or 'cpu') or rebuild qtip_ops where nvcc is available")
                if "disk" in devices:
                    raise ValueError("qtip: disk offload is not supported for QTIP-quantized models")

            def modules_to_quantize(self, model) -> list[str]:
                cfg = self.quantization_config
                if cfg.quantized_modules is not None:
                    # The checkpoint's own list: no default skips, and exclusions by exact name or module prefix
                    # only (a suffix such as "lm_head" must not drop a quantized "language_model.lm_head").
                    skip = tuple(cfg.modules_to_not_convert or ())
                    return [n for n in cfg.quantized_modules
                            if not any(n == s or n.startswith(f"{s}.") for s in skip)]
                names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
                skip = self.get_modules_to_not_convert(model, cfg.modules_to_not_convert, model._keep_in_fp32_modules,
                                                       add_default_skips=True)
                return [n for n in names if should_convert_module(n, skip)]

            def _process_model_before_weight_loading(self, model, **kwargs):
                cfg = self.quantization_config
                for name in self.modules_to_quantize(model):
                    try:
                        linear = model.get_submodule(name)
                    except AttributeError:
                        raise ValueError(f"qtip: quantized module {name!r} does not exist in "
                                         f"{type(model).__name__}") from None
                    if isinstance(linear, QTIPLinear):
                        continue
                    if not isinstance(linear, nn.Linear):
                        raise ValueError(f"qtip: quantized module {name!r} is a {type(linear).__name__}, "
                                         "expected nn.Linear")
                    L, K, V, mode, shape = cfg.code_for(name)
                    layer = QTIPLinear(linear.in_features, linear.out_features, L, K, V, mode,
                                       None if shape is None else tuple(shape), bias=linear.bias is not None,
                                       device=linear.weight.device)
                    set_submodule(model, name, layer)
                _check_checkpoint_has_qtip_tensors(model, kwargs.get("checkpoint_files"), QTIPLinear)
                return model

            def is_serializable(self, **kwargs):
                return True

            @property
            def is_trainable(self) -> bool:
                return False

            @property
            def is_compileable(self) -> bool:
                return True

        if METHOD not in AUTO_QUANTIZATION_CONFIG_MAPPING:
            register_quantization_config(METHOD)(QTIPConfig)
        if METHOD not in AUTO_QUANTIZER_MAPPING:
            register_quantizer(METHOD)(QTIPHfQuantizer)
        _classes.update(QTIPConfig=QTIPConfig, QTIPHfQuantizer=QTIPHfQuantizer)
        return _classes


def _check_checkpoint_has_qtip_tensors(model, checkpoint_files, qtip_linear_cls) -> None:
    """Raises if a safetensors checkpoint lacks a tensor of a QTIPLinear shell: transformers would leave that
    buffer uninitialized (garbage codes) with only a warning."""
    files = [f for f in checkpoint_files or [] if str(f).endswith(".safetensors")]
    if not files:
        return
    from safetensors import safe_open

    keys: set[str] = set()
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            keys.update(handle.keys())
    prefix = f"{model.base_model_prefix}." if getattr(model, "base_model_prefix", "") else ""
    missing = []
    for name, module in model.named_modules():
        if isinstance(module, qtip_linear_cls):
            for buf_name, buf in module.named_buffers(recurse=False):
                key = f"{name}.{buf_name}"
                if buf is not None and key not in keys and key.removeprefix(prefix) not in keys:
                    missing.append(key)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"qtip: the checkpoint lacks tensors of its quantized modules: {shown}")


def __getattr__(name: str):
    if name in ("QTIPConfig", "QTIPHfQuantizer"):
        return _define()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _RegisterOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Wraps the loader of transformers.quantizers.auto so the method is registered right after it runs."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _REGISTRY_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _WrappedLoader(spec.loader)
                return spec
        return None


class _WrappedLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _uninstall_hook()
        _define()

    def __getattr__(self, name):  # get_source, get_filename, is_package... of the real loader
        return getattr(self._loader, name)


_hook = _RegisterOnImport()


def _uninstall_hook() -> None:
    if _hook in sys.meta_path:
        sys.meta_path.remove(_hook)


def install() -> None:
    """Registers "qtip" with transformers now if its quantizer registry is loaded, else when it loads.
    Does nothing when transformers is not installed."""
    if _REGISTRY_MODULE in sys.modules:
        _define()
    elif importlib.util.find_spec("transformers") is not None and _hook not in sys.meta_path:
        sys.meta_path.insert(0, _hook)


install()
