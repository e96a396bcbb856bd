"""A QTIP-quantized model as one GGUF file (export/FORMAT.md is the specification).

    write_gguf(src_dir, dst)        quantized directory (qtip_ops.checkpoint) -> one .gguf
    read_gguf(src, dst_dir)         .gguf -> quantized directory (same tensors, config.json and tokenizer files)
    load_gguf_model(src)            .gguf -> (model, tokenizer or None)

The file is a standard GGUF v3 (little-endian, 32-byte alignment) that stock readers open: packed trellises
are plain I16 tensors, SU/SV/tlut and the unquantized weights F16/BF16/F32 tensors, never a new GGML type.
Tensors have llama.cpp-style names (`blk.N.attn_q.trellis`); the hyper-parameters are in the usual `llama.*`
keys, the tokenizer (when the directory has one) in the usual `tokenizer.ggml.*` keys, and every QTIP
parameter under `qtip.*` keys, with the directory's config.json and tokenizer files verbatim so reading back
reproduces the directory exactly.

Both directions validate everything they read against the model the config describes (a meta-device
skeleton: tensor names, shapes, dtypes) and raise `FormatError` naming the file, the tensor or key and the
expected value. The GGUF reader is a strict, bounds-checked parser of its own (the stock `gguf.GGUFReader`
can loop for a very long time on a corrupt array length), so a truncated or corrupted file fails with a
`FormatError`, never with a hang or a crash. Outputs are written to a temporary path beside the destination
and renamed at the end: an interrupted conversion leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import shutil
import struct
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .errors import FormatError

__all__ = ["CONTAINER_VERSION", "FormatError", "GGUFContainer", "gguf_tensor_name", "hf_tensor_name",
           "load_gguf_model", "open_gguf", "read_gguf", "write_gguf"]

CONTAINER_VERSION = 1  # qtip.format_version
ARCHITECTURE = "llama"
MODEL_TYPES = ("llama", "mistral")  # HF model types written as general.architecture "llama"
LAYOUT = "tiles row-major, 16x16, mma A-fragment in-tile order, MSB-first int16 streams"
TILE = 16
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
# Files of the directory besides config.json and the weights that travel in the GGUF (verbatim, under
# qtip.file.<name>); nothing else is copied, and a reader refuses any other name.
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
              "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
              "generation_config.json")
MAX_SIDE_FILE = 256 << 20

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)  # 2 and 3 differ only in big-endian support; this module writes 3
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4

# GGUF metadata value types (the GGUF specification's numbering; same as gguf.GGUFValueType).
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
_TYPE_NAMES = {UINT8: "UINT8", INT8: "INT8", UINT16: "UINT16", INT16: "INT16", UINT32: "UINT32", INT32: "INT32",
               FLOAT32: "FLOAT32", BOOL: "BOOL", STRING: "STRING", ARRAY: "ARRAY", UINT64: "UINT64",
               INT64: "INT64", FLOAT64: "FLOAT64"}
_SCALAR_DTYPES = {UINT8: "<u1", INT8: "<i1", UINT16: "<u2", INT16: "<i2", UINT32: "<u4", INT32: "<i4",
                  FLOAT32: "<f4", BOOL: "<u1", UINT64: "<u8", INT64: "<i8", FLOAT64: "<f8"}
_INT_TYPES = (UINT8, INT8, UINT16, INT16, UINT32, INT32, UINT64, INT64)
_FLOAT_TYPES = (FLOAT32, FLOAT64)

# The GGML tensor types this container uses (all standard ones): id, element size, numpy dtype, torch dtype.
GGML_F32, GGML_F16, GGML_I16, GGML_BF16 = 0, 1, 25, 30  # gguf.GGMLQuantizationType values
_TENSOR_TYPES = {
    GGML_F32: ("F32", 4, "<f4", torch.float32),
    GGML_F16: ("F16", 2, "<f2", torch.float16),
    GGML_BF16: ("BF16", 2, "<i2", torch.bfloat16),  # read as int16 bits, then viewed as bfloat16
    GGML_I16: ("I16", 2, "<i2", torch.int16),
}
_TORCH_TO_GGML = {v[3]: k for k, v in _TENSOR_TYPES.items()}
_TYPE_BY_NAME = {v[0]: k for k, v in _TENSOR_TYPES.items()}
_FLOAT_KINDS = ("F16", "BF16", "F32")

# tokenizer.ggml.token_type values (llama.cpp's)
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED = 1, 3, 4, 5


# ---------------------------------------------------------------------------------------------------------
# Tensor names: Hugging Face Llama names <-> llama.cpp names (a bijection on the names a Llama model has).

_LAYER_MODULES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}
_GLOBAL_MODULES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
_LAYER_MODULES_BACK = {v: k for k, v in _LAYER_MODULES.items()}
_GLOBAL_MODULES_BACK = {v: k for k, v in _GLOBAL_MODULES.items()}
LEAVES = ("weight", "bias", "trellis", "SU", "SV", "tlut")
_INDEX = r"(0|[1-9][0-9]{0,5})"
_HF_LAYER = re.compile(rf"model\.layers\.{_INDEX}\.(.+)")
_GGUF_LAYER = re.compile(rf"blk\.{_INDEX}\.(.+)")


def gguf_module_name(hf: str) -> str | None:
    """`model.layers.3.self_attn.q_proj` -> `blk.3.attn_q`; None for a module with no GGUF name."""
    if hf in _GLOBAL_MODULES:
        return _GLOBAL_MODULES[hf]
    match = _HF_LAYER.fullmatch(hf)
    if match and match.group(2) in _LAYER_MODULES:
        return f"blk.{match.group(1)}.{_LAYER_MODULES[match.group(2)]}"
    return None


def hf_module_name(gguf: str) -> str | None:
    """Inverse of gguf_module_name."""
    if gguf in _GLOBAL_MODULES_BACK:
        return _GLOBAL_MODULES_BACK[gguf]
    match = _GGUF_LAYER.fullmatch(gguf)
    if match and match.group(2) in _LAYER_MODULES_BACK:
        return f"model.layers.{match.group(1)}.{_LAYER_MODULES_BACK[match.group(2)]}"
    return None


def gguf_tensor_name(hf: str) -> str | None:
    """`model.layers.3.self_attn.q_proj.trellis` -> `blk.3.attn_q.trellis`; None when there is no mapping."""
    module, _, leaf = hf.rpartition(".")
    name = gguf_module_name(module) if leaf in LEAVES else None
    return None if name is None else f"{name}.{leaf}"


def hf_tensor_name(gguf: str) -> str | None:
    module, _, leaf = gguf.rpartition(".")
    name = hf_module_name(module) if leaf in LEAVES else None
    return None if name is None else f"{name}.{leaf}"


# ---------------------------------------------------------------------------------------------------------
# The GGUF container: a strict parser (bounds-checked, never loops past the data) and a writer built on
# gguf.GGUFWriter.


@dataclass(frozen=True)
class KV:
    """A metadata value: GGUF value type, Python value (list for arrays, bytes for UINT8 arrays) and the
    element type of an array."""

    type: int
    value: Any
    sub_type: int | None = None

    def type_name(self) -> str:
        if self.type == ARRAY:
            return f"ARRAY[{_TYPE_NAMES.get(self.sub_type, self.sub_type)}]"
        return _TYPE_NAMES.get(self.type, str(self.type))


@dataclass(frozen=True)
class TensorInfo:
    name: str
    ggml_type: int
    shape: tuple[int, ...]  # row-major (PyTorch/numpy) order: the reverse of GGUF's ne[]
    offset: int  # absolute file offset of the data
    nbytes: int

    @property
    def kind(self) -> str:
        return _TENSOR_TYPES[self.ggml_type][0]


class GGUFContainer:
    """A parsed GGUF file: `metadata` {key: KV} and `tensors` {name: TensorInfo} in file order; `tensor(name)`
    reads one tensor. Use through `open_gguf`."""

    def __init__(self, path: Path, buf, size: int):
        self.path, self._buf, self.size = path, buf, size
        self.metadata: dict[str, KV] = {}
        self.tensors: dict[str, TensorInfo] = {}
        self.version = 0
        self.alignment = DEFAULT_ALIGNMENT
        self.data_offset = 0
        self._pos = 0
        self._parse()

    # -- low-level reads, all bounds-checked
    def _fail(self, item: str, expected: object, found: object = None):
        raise FormatError(self.path, item, expected, found)

    def _need(self, n: int, item: str) -> None:
        if n < 0 or self._pos + n > self.size:
            self._fail(item, f"{n} bytes at offset {self._pos}", f"end of file at {self.size} (truncated?)")

    def _unpack(self, fmt: str, item: str):
        n = struct.calcsize(fmt)
        self._need(n, item)
        value = struct.unpack_from(fmt, self._buf, self._pos)[0]
        self._pos += n
        return value

    def _bytes(self, n: int, item: str) -> bytes:
        self._need(n, item)
        raw = self._buf[self._pos:self._pos + n]
        self._pos += n
        return raw

    def _string(self, item: str) -> str:
        n = self._unpack("<Q", f"{item} (string length)")
        start = self._pos
        raw = self._bytes(n, item)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            self._fail(item, "a UTF-8 string", f"invalid UTF-8 at offset {start + err.start}")

    def _value(self, vtype: int, key: str) -> KV:
        if vtype == STRING:
            return KV(STRING, self._string(key))
        if vtype in _SCALAR_DTYPES:
            dtype = np.dtype(_SCALAR_DTYPES[vtype])
            value = np.frombuffer(self._bytes(dtype.itemsize, key), dtype)[0].item()
            if vtype == BOOL:
                if value not in (0, 1):
                    self._fail(key, "a BOOL of 0 or 1", value)
                value = bool(value)
            return KV(vtype, value)
        if vtype != ARRAY:
            self._fail(key, "a GGUF value type 0..12", vtype)
        itype = self._unpack("<I", f"{key} (array element type)")
        count = self._unpack("<Q", f"{key} (array length)")
        if itype == STRING:
            self._need(8 * count, f"{key} (array of {count} strings)")
            return KV(ARRAY, [self._string(f"{key}[{i}]") for i in range(count)], STRING)
        if itype not in _SCALAR_DTYPES:
            self._fail(f"{key} (array element type)", "a scalar or STRING type (no nested arrays)",
                       _TYPE_NAMES.get(itype, itype))
        dtype = np.dtype(_SCALAR_DTYPES[itype])
        data = self._bytes(dtype.itemsize * count, f"{key} (array of {count} {_TYPE_NAMES[itype]})")
        if itype == UINT8:
            return KV(ARRAY, data, UINT8)
        values = np.frombuffer(data, dtype)
        if itype == BOOL:
            if values.size and values.max() > 1:
                self._fail(key, "BOOL elements of 0 or 1", int(values.max()))
            values = values.astype(bool)
        return KV(ARRAY, values.tolist(), itype)

    # -- the file
    def _parse(self) -> None:
        magic = self._bytes(4, "GGUF magic")
        if magic != GGUF_MAGIC:
            self._fail("GGUF magic", repr(GGUF_MAGIC), repr(magic))
        self.version = self._unpack("<I", "GGUF version")
        if self.version not in GGUF_VERSIONS:
            hint = " (a big-endian file?)" if self.version and not self.version & 0xFFFF else ""
            self._fail("GGUF version", f"one of {GGUF_VERSIONS} (little-endian)", f"{self.version}{hint}")
        n_tensors = self._unpack("<Q", "GGUF tensor count")
        n_kv = self._unpack("<Q", "GGUF metadata count")
        room = self.size - self._pos
        if n_kv > room // 13:  # smallest entry: 8-byte key length + 1-byte key + type + 1-byte value
            self._fail("GGUF metadata count", f"at most {room // 13} entries in the remaining {room} bytes", n_kv)
        if n_tensors > room // 24:  # smallest tensor info: name length, n_dims, dim, type, offset
            self._fail("GGUF tensor count", f"at most {room // 24} tensors in the remaining {room} bytes",
                       n_tensors)
        for i in range(n_kv):
            key = self._string(f"metadata key #{i}")
            if not key:
                self._fail(f"metadata key #{i}", "a non-empty key", "an empty string")
            if key in self.metadata:
                self._fail(key, "a unique metadata key", "a duplicate")
            vtype = self._unpack("<I", f"{key} (value type)")
            self.metadata[key] = self._value(vtype, key)
        alignment = self.metadata.get("general.alignment")
        if alignment is not None:
            if alignment.type != UINT32 or not alignment.value or alignment.value & (alignment.value - 1):
                self._fail("general.alignment", "a UINT32 power of two", f"{alignment.type_name()} "
                           f"{alignment.value!r}")
            self.alignment = alignment.value
        infos = []
        for i in range(n_tensors):
            name = self._string(f"tensor #{i} name")
            if not name:
                self._fail(f"tensor #{i} name", "a non-empty name", "an empty string")
            n_dims = self._unpack("<I", f"{name} (n_dims)")
            if not 1 <= n_dims <= MAX_DIMS:
                self._fail(f"{name} (n_dims)", f"1..{MAX_DIMS} dimensions", n_dims)
            ne = [self._unpack("<Q", f"{name} (dim {d})") for d in range(n_dims)]
            ggml_type = self._unpack("<I", f"{name} (type)")
            offset = self._unpack("<Q", f"{name} (data offset)")
            infos.append((name, ne, ggml_type, offset))
        self.data_offset = -(-self._pos // self.alignment) * self.alignment
        for name, ne, ggml_type, offset in infos:
            if name in self.tensors:
                self._fail(name, "a unique tensor name", "a duplicate")
            if ggml_type not in _TENSOR_TYPES:
                self._fail(name, f"tensor type {', '.join(v[0] for v in _TENSOR_TYPES.values())}",
                           f"GGML type id {ggml_type}")
            if any(d < 1 for d in ne):
                self._fail(name, "dimensions >= 1", f"ne={ne}")
            if offset % self.alignment:
                self._fail(name, f"a data offset aligned to {self.alignment} bytes", offset)
            nbytes = math.prod(ne) * _TENSOR_TYPES[ggml_type][1]
            start = self.data_offset + offset
            if start + nbytes > self.size:
                self._fail(name, f"{nbytes} data bytes at offset {start}", f"end of file at {self.size} "
                           "(truncated?)")
            self.tensors[name] = TensorInfo(name, ggml_type, tuple(reversed(ne)), start, nbytes)

    def tensor(self, name: str) -> torch.Tensor:
        info = self.tensors[name]
        _, _, np_dtype, torch_dtype = _TENSOR_TYPES[info.ggml_type]
        data = bytearray(self._buf[info.offset:info.offset + info.nbytes])
        array = np.frombuffer(data, np.dtype(np_dtype)).reshape(info.shape)
        t = torch.from_numpy(array)
        return t.view(torch.bfloat16) if torch_dtype == torch.bfloat16 else t


@contextmanager
def open_gguf(path: str | Path) -> Iterator[GGUFContainer]:
    """Parses a GGUF file (header, metadata, tensor index); FormatError if it is malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise FormatError(path, "GGUF magic", "the 4 bytes b'GGUF'", "an empty file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            yield GGUFContainer(path, buf, size)


def write_container(path: str | Path, metadata: dict[str, KV],
                    tensors: list[tuple[str, tuple[int, ...], int, Any]]) -> None:
    """Writes a GGUF v3 file with gguf.GGUFWriter: `metadata` in order, then `tensors` as (name, row-major
    shape, GGML type id, source) where source is a torch tensor, a numpy array or a zero-argument callable
    returning one (called once, when that tensor's data is written). Writes `path` directly: callers that
    need atomicity write to a temporary path."""
    import gguf

    writer = gguf.GGUFWriter(None, ARCHITECTURE)
    writer.kv_data[0].clear()  # the constructor's general.architecture: `metadata` says everything
    try:
        for key, kv in metadata.items():
            if kv.type == ARRAY and len(kv.value) == 0:
                raise ValueError(f"{key}: GGUFWriter cannot write an empty array")
            sub = None if kv.sub_type is None else gguf.GGUFValueType(kv.sub_type)
            writer.add_key_value(key, kv.value, gguf.GGUFValueType(kv.type), sub_type=sub)
        for name, shape, ggml_type, _ in tensors:
            _, size, np_dtype, _ = _TENSOR_TYPES[ggml_type]
            writer.add_tensor_info(name, shape, np.dtype(np_dtype), math.prod(shape) * size,
                                   raw_dtype=gguf.GGMLQuantizationType(ggml_type))
        writer.write_header_to_file(path=Path(path))
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for name, shape, ggml_type, source in tensors:
            array = _to_numpy(source() if callable(source) else source)
            if tuple(array.shape) != tuple(shape):
                raise ValueError(f"tensor {name}: data of shape {tuple(array.shape)}, declared {tuple(shape)}")
            writer.write_tensor_data(array)
        writer.flush()
        os.fsync(writer.fout[0].fileno())
    finally:
        writer.close()


def _to_numpy(t) -> np.ndarray:
    if isinstance(t, np.ndarray):
        return np.ascontiguousarray(t)
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy()
    return t.numpy()


# ---------------------------------------------------------------------------------------------------------
# What a quantized model consists of: the QTIP parameters of each quantized module, and the tensors the
# model the config describes has (from a meta-device skeleton, so shapes are exactly what load_quantized
# accepts).


@dataclass(frozen=True)
class Code:
    L: int
    K: int
    V: int
    mode: str
    tlut_shape: tuple[int, int] | None

    FIELDS = ("L", "K", "V", "mode", "tlut_shape")


def default_tlut_shape(mode: str, L: int, V: int) -> tuple[int, int] | None:
    """The table a mode stores when a per_module entry of a config.json changes the code without giving a
    tlut_shape (qtip_ops.hf's rule): HYB's 512 x 2, a 2^L x V LUT, none for the computed codes."""
    if mode == "hyb":
        return (512, 2)
    if mode == "lut" and 0 < L <= 24:
        return (1 << L, V)
    return None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_code(code: Code, file, item: str) -> None:
    from ..codes import MODES, check_code

    if code.mode not in MODES:
        raise FormatError(file, f"{item}mode", f"one of {', '.join(MODES)}", repr(code.mode))
    tlut = None if code.tlut_shape is None else torch.empty(code.tlut_shape, device="meta")
    try:
        check_code(code.L, code.K, code.V, code.mode, tlut)
    except ValueError as err:
        raise FormatError(file, f"{item}L/K/V/mode/tlut_shape", "a valid QTIP code", str(err)) from None


def _json_codes(qc: dict, file, where: str) -> dict[str, Code]:
    """{HF module name: Code} from a config.json quantization_config (all of checkpoint.py's keys)."""
    from ..checkpoint import FORMAT_VERSION

    def get(d: dict, key: str, check, expected: str, item: str):
        if key not in d:
            raise FormatError(file, f"{item}{key}", expected, "missing")
        if not check(d[key]):
            raise FormatError(file, f"{item}{key}", expected, repr(d[key]))
        return d[key]

    def shape_ok(v):
        return v is None or (isinstance(v, list) and len(v) == 2 and all(_is_int(x) and x > 0 for x in v))

    item = f"{where}quantization_config."
    get(qc, "quant_method", lambda v: v == "qtip", "'qtip'", item)
    get(qc, "format_version", lambda v: v == FORMAT_VERSION, str(FORMAT_VERSION), item)
    get(qc, "tile", lambda v: v == TILE, str(TILE), item)
    base = {}
    for key in ("L", "K", "V"):
        base[key] = get(qc, key, _is_int, "an integer", item)
    base["mode"] = get(qc, "mode", lambda v: isinstance(v, str), "a mode string", item)
    shape = get(qc, "tlut_shape", shape_ok, "null or a [rows, columns] list", item)
    base["tlut_shape"] = None if shape is None else tuple(shape)
    modules = get(qc, "quantized_modules", lambda v: isinstance(v, list) and v and all(
        isinstance(x, str) for x in v) and len(set(v)) == len(v), "a non-empty list of unique module names", item)
    per_module = qc.get("per_module") or {}
    if not isinstance(per_module, dict):
        raise FormatError(file, f"{item}per_module", "an object {module: {L, K, V, mode}}", repr(per_module))
    codes = {}
    for name in modules:
        fields = {k: v for k, v in base.items() if k != "tlut_shape"}
        override = per_module.get(name, {})
        if not isinstance(override, dict) or set(override) - set(Code.FIELDS):
            raise FormatError(file, f"{item}per_module.{name}", f"an object with keys among {Code.FIELDS}",
                              repr(override))
        for key, value in override.items():
            ok = shape_ok(value) if key == "tlut_shape" else (isinstance(value, str) if key == "mode" else _is_int(
                value))
            if not ok:
                raise FormatError(file, f"{item}per_module.{name}.{key}", "a valid value", repr(value))
            fields[key] = tuple(value) if key == "tlut_shape" and value is not None else value
        if "tlut_shape" not in fields:
            same = (fields["L"], fields["V"], fields["mode"]) == (base["L"], base["V"], base["mode"])
            fields["tlut_shape"] = (base["tlut_shape"] if same or fields["mode"] == base["mode"] == "hyb"
                                    else default_tlut_shape(fields["mode"], fields["L"], fields["V"]))
        codes[name] = Code(**fields)
    unknown = sorted(set(per_module) - set(modules))
    if unknown:
        raise FormatError(file, f"{item}per_module.{unknown[0]}", "a module listed in quantized_modules",
                          "a module that is not")
    for name, code in codes.items():
        _check_code(code, file, f"{item}per_module.{name}." if name in per_module else item)
    return codes


def _model_type(hf_config: dict, file, where: str) -> str:
    model_type = hf_config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise FormatError(file, f"{where}model_type", f"one of {', '.join(MODEL_TYPES)} (a Llama-architecture "
                          "model)", repr(model_type))
    return model_type


def _hf_tensors(hf_config: dict, codes: dict[str, Code], file, where: str):
    """({HF tensor name: (shape, allowed kinds)} in model order, set of optional names) of the model that
    `hf_config` describes with `codes` quantized."""
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    from ..models import set_submodule
    from ..nn import QTIPLinear

    model_type = _model_type(hf_config, file, where)
    config_dict = {k: v for k, v in hf_config.items() if k != "quantization_config"}
    try:
        config = CONFIG_MAPPING[model_type].from_dict(config_dict)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as err:  # anything transformers rejects in the config is a malformed file
        raise FormatError(file, where.strip() or CONFIG, f"a {model_type} configuration transformers can "
                          "build", f"{type(err).__name__}: {err}") from None
    for name, code in codes.items():
        try:
            linear = model.get_submodule(name)
        except AttributeError:
            linear = None
        if not isinstance(linear, torch.nn.Linear):
            raise FormatError(file, f"{where}quantization_config.quantized_modules", "names of linear layers "
                              f"of the {model_type} model", repr(name))
        layer = QTIPLinear(linear.in_features, linear.out_features, code.L, code.K, code.V, code.mode,
                           code.tlut_shape, bias=linear.bias is not None, device="meta")
        set_submodule(model, name, layer)
    quantized = tuple(f"{name}." for name in codes)
    expected = {}
    for name, t in model.state_dict().items():
        kinds = ("I16",) if name.endswith(".trellis") and name.startswith(quantized) else _FLOAT_KINDS
        expected[name] = (tuple(t.shape), kinds)
    optional = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    return expected, optional


def _check_tensors(file, found: dict[str, tuple[tuple[int, ...], str]], expected, optional, display) -> None:
    """`found` {HF name: (shape, kind)} against `expected`; `display` names a tensor the way the file does."""
    for name, (shape, kinds) in expected.items():
        if name not in found:
            if name in optional:
                continue
            raise FormatError(file, display(name), f"a tensor of shape {shape}, dtype {' or '.join(kinds)}",
                              "missing")
        got_shape, got_kind = found[name]
        if got_shape != shape:
            raise FormatError(file, display(name), f"shape {shape}", f"shape {got_shape}")
        if got_kind not in kinds:
            raise FormatError(file, display(name), f"dtype {' or '.join(kinds)}", got_kind)
    for name, (shape, kind) in found.items():
        if name not in expected:
            raise FormatError(file, display(name), "only the tensors of the model the config describes",
                              f"an extra {kind} tensor of shape {shape}")


def _config_int(cfg: dict, key: str, file, where: str, default=None) -> int:
    value = cfg.get(key, default)
    if not _is_int(value) or not 0 < value < 1 << 32:
        raise FormatError(file, f"{where}{key}", "a positive integer below 2^32", repr(value))
    return value


def _config_float(cfg: dict, key: str, value, file, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FormatError(file, f"{where}{key}", "a finite number", repr(value))
    return float(value)


def _llama_keys(cfg: dict, file, where: str) -> dict[str, KV]:
    """The llama.* hyper-parameter keys of an HF Llama config."""
    hidden = _config_int(cfg, "hidden_size", file, where)
    heads = _config_int(cfg, "num_attention_heads", file, where)
    head_dim = cfg.get("head_dim")
    head_dim = _config_int(cfg, "head_dim", file, where, hidden // heads) if head_dim is not None else hidden // heads
    rope = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), dict) else {}
    theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0))
    return {
        "llama.context_length": KV(UINT32, _config_int(cfg, "max_position_embeddings", file, where)),
        "llama.embedding_length": KV(UINT32, hidden),
        "llama.block_count": KV(UINT32, _config_int(cfg, "num_hidden_layers", file, where)),
        "llama.feed_forward_length": KV(UINT32, _config_int(cfg, "intermediate_size", file, where)),
        "llama.attention.head_count": KV(UINT32, heads),
        "llama.attention.head_count_kv": KV(UINT32, _config_int(cfg, "num_key_value_heads", file, where, heads)),
        "llama.rope.freq_base": KV(FLOAT32, _config_float(cfg, "rope_theta", theta, file, where)),
        "llama.attention.layer_norm_rms_epsilon": KV(FLOAT32, _config_float(
            cfg, "rms_norm_eps", cfg.get("rms_norm_eps", 1e-6), file, where)),
        "llama.vocab_size": KV(UINT32, _config_int(cfg, "vocab_size", file, where)),
        "llama.rope.dimension_count": KV(UINT32, head_dim),
        "llama.attention.key_length": KV(UINT32, head_dim),
        "llama.attention.value_length": KV(UINT32, head_dim),
    }


def _qtip_keys(codes: dict[str, Code], hf_config: dict) -> dict[str, KV]:
    """The qtip.* keys describing the quantization (everything but the verbatim files)."""
    qc = hf_config["quantization_config"]
    base = Code(qc["L"], qc["K"], qc["V"], qc["mode"], None if qc["tlut_shape"] is None else tuple(qc["tlut_shape"]))
    keys = {
        "qtip.format_version": KV(UINT32, CONTAINER_VERSION),
        "qtip.layout": KV(STRING, LAYOUT),
        "qtip.tile": KV(UINT32, TILE),
        "qtip.L": KV(UINT32, base.L),
        "qtip.K": KV(UINT32, base.K),
        "qtip.V": KV(UINT32, base.V),
        "qtip.mode": KV(STRING, base.mode),
    }
    if base.tlut_shape is not None:
        keys["qtip.tlut_shape"] = KV(ARRAY, list(base.tlut_shape), UINT32)
    keys["qtip.quantized_modules"] = KV(ARRAY, [gguf_module_name(n) for n in codes], STRING)
    overrides = {n: c for n, c in codes.items() if c != base}
    if overrides:
        keys["qtip.per_module"] = KV(ARRAY, [gguf_module_name(n) for n in overrides], STRING)
        for name, code in overrides.items():
            prefix = f"qtip.per_module.{gguf_module_name(name)}"
            keys[f"{prefix}.L"] = KV(UINT32, code.L)
            keys[f"{prefix}.K"] = KV(UINT32, code.K)
            keys[f"{prefix}.V"] = KV(UINT32, code.V)
            keys[f"{prefix}.mode"] = KV(STRING, code.mode)
            if code.tlut_shape is not None:  # explicit: an override without it has no table
                keys[f"{prefix}.tlut_shape"] = KV(ARRAY, list(code.tlut_shape), UINT32)
    keys["qtip.tie_word_embeddings"] = KV(BOOL, bool(hf_config.get("tie_word_embeddings", False)))
    return keys


# ---------------------------------------------------------------------------------------------------------
# Tokenizer: llama.cpp's tokenizer.ggml.* keys for a GPT-2-style byte-level BPE (tokenizer.json model
# "BPE" without byte fallback). Other tokenizers travel only as their verbatim files.


def _token_content(value) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _tokenizer_keys(files: dict[str, str | bytes], hf_config: dict, src: Path) -> dict[str, KV]:
    text = files.get("tokenizer.json")
    if not isinstance(text, str):
        return {}
    file = src / "tokenizer.json"
    tj = json.loads(text)  # validated as JSON already
    model = tj.get("model") if isinstance(tj, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE" or model.get("byte_fallback"):
        return {}
    vocab = model.get("vocab")
    added = tj.get("added_tokens") or []
    if not isinstance(vocab, dict) or not isinstance(added, list):
        raise FormatError(file, "model.vocab / added_tokens", "an object and a list", "other JSON types")
    id_to_token: dict[int, str] = {}
    for token, i in vocab.items():
        if not _is_int(i) or not 0 <= i < 1 << 24:
            raise FormatError(file, f"model.vocab[{token!r}]", "a token id in [0, 2^24)", repr(i))
        id_to_token[i] = token
    special, user = set(), set()
    for entry in added:
        i = entry.get("id") if isinstance(entry, dict) else None
        content = entry.get("content") if isinstance(entry, dict) else None
        if not _is_int(i) or not 0 <= i < 1 << 24 or not isinstance(content, str):
            raise FormatError(file, "added_tokens", "entries with an integer id and a string content", repr(entry))
        id_to_token[i] = content
        (special if entry.get("special") else user).add(i)
    vocab_size = hf_config.get("vocab_size") if _is_int(hf_config.get("vocab_size")) else 0
    n = max(vocab_size, max(id_to_token, default=-1) + 1)
    tokens, types = [], []
    for i in range(n):
        token = id_to_token.get(i)
        tokens.append(f"[PAD{i}]" if token is None else token)
        types.append(TOKEN_UNUSED if token is None else TOKEN_CONTROL if i in special
                     else TOKEN_USER_DEFINED if i in user else TOKEN_NORMAL)
    if not tokens:
        return {}
    keys = {"tokenizer.ggml.model": KV(STRING, "gpt2"),
            "tokenizer.ggml.tokens": KV(ARRAY, tokens, STRING),
            "tokenizer.ggml.token_type": KV(ARRAY, types, INT32)}
    merges = []
    for merge in model.get("merges") or []:
        if isinstance(merge, list) and len(merge) == 2 and all(isinstance(m, str) for m in merge):
            merge = " ".join(merge)
        if not isinstance(merge, str):
            raise FormatError(file, "model.merges", "strings 'a b' or pairs [a, b]", repr(merge))
        merges.append(merge)
    if merges:
        keys["tokenizer.ggml.merges"] = KV(ARRAY, merges, STRING)
    tc = json.loads(files["tokenizer_config.json"]) if isinstance(files.get("tokenizer_config.json"), str) else {}
    tc = tc if isinstance(tc, dict) else {}
    token_to_id = {t: i for i, t in id_to_token.items()}
    for role, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"),
                      ("pad", "padding_token_id")):
        token_id = token_to_id.get(_token_content(tc.get(f"{role}_token")))
        if token_id is None and _is_int(hf_config.get(f"{role}_token_id")):
            token_id = hf_config[f"{role}_token_id"]
        if token_id is not None and 0 <= token_id < len(tokens):
            keys[f"tokenizer.ggml.{key}"] = KV(UINT32, token_id)
    for flag in ("add_bos_token", "add_eos_token"):
        if isinstance(tc.get(flag), bool):
            keys[f"tokenizer.ggml.{flag}"] = KV(BOOL, tc[flag])
    template = tc.get("chat_template")
    if not isinstance(template, str):
        template = files.get("chat_template.jinja")
    if isinstance(template, str) and template:
        keys["tokenizer.chat_template"] = KV(STRING, template)
    return keys


# ---------------------------------------------------------------------------------------------------------
# Directory -> GGUF


def _read_text(path: Path, item: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise FormatError(path, item, "UTF-8 text", f"invalid UTF-8 at byte {err.start}") from None


def _parse_json(text: str, file, item: str):
    try:
        return json.loads(text)
    except ValueError as err:
        raise FormatError(file, item, "valid JSON", str(err)) from None


def _read_source(src: Path):
    """(config.json text, config dict, side files {name: str | bytes}) of a quantized directory."""
    config_path = src / CONFIG
    if not config_path.is_file():
        raise FormatError(config_path, CONFIG, "the config.json of a QTIP-quantized directory", "missing")
    text = _read_text(config_path, CONFIG)
    config = _parse_json(text, config_path, CONFIG)
    if not isinstance(config, dict):
        raise FormatError(config_path, CONFIG, "a JSON object", type(config).__name__)
    if not isinstance(config.get("quantization_config"), dict):
        raise FormatError(config_path, "quantization_config", "an object with quant_method 'qtip'", "missing")
    files: dict[str, str | bytes] = {}
    for name in SIDE_FILES:
        path = src / name
        if not path.is_file():
            continue
        if path.stat().st_size > MAX_SIDE_FILE:
            raise FormatError(path, name, f"a side file of at most {MAX_SIDE_FILE} bytes", path.stat().st_size)
        raw = path.read_bytes()
        try:
            files[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            if name != "tokenizer.model":
                raise FormatError(path, name, "UTF-8 text", "binary data") from None
            files[name] = raw
        if name.endswith(".json"):
            _parse_json(files[name], path, name)
    return text, config, files


def _safetensors_index(path: Path):
    """{name: (shape, kind)} and an open safe_open handle (a context manager) of a weights file."""
    from safetensors import safe_open

    if not path.is_file():
        raise FormatError(path, WEIGHTS, "the weights of the quantized directory", "missing")
    try:
        handle = safe_open(str(path), framework="pt")
        index = {}
        for name in handle.keys():
            part = handle.get_slice(name)
            index[name] = (tuple(part.get_shape()), part.get_dtype())
    except Exception as err:  # safetensors raises its own error types for a malformed header
        raise FormatError(path, "safetensors header", "a valid safetensors file", f"{type(err).__name__}: "
                          f"{err}") from None
    return index, handle


def write_gguf(src_dir: str | Path, dst: str | Path) -> Path:
    """Converts a quantized directory (config.json with a qtip quantization_config, model.safetensors and
    optionally tokenizer files) into one GGUF file at `dst`; returns `dst`. Atomic: written to a temporary
    file beside `dst` and renamed at the end (an existing `dst` is replaced only then)."""
    src, dst = Path(src_dir), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"quantized model directory {src} does not exist")
    if dst.is_dir():
        raise IsADirectoryError(f"GGUF output {dst} is a directory; give a file path")
    config_text, config, files = _read_source(src)
    config_path, weights = src / CONFIG, src / WEIGHTS
    codes = _json_codes(config["quantization_config"], config_path, "")
    for name in codes:
        if gguf_module_name(name) is None:
            raise FormatError(config_path, "quantization_config.quantized_modules", "Llama module names such as "
                              "model.layers.0.self_attn.q_proj", repr(name))
    metadata: dict[str, KV] = {"general.architecture": KV(STRING, ARCHITECTURE)}
    _model_type(config, config_path, "")
    metadata.update(_llama_keys(config, config_path, ""))
    metadata.update(_qtip_keys(codes, config))
    metadata["qtip.hf_config"] = KV(STRING, config_text)
    metadata.update(_tokenizer_keys(files, config, src))
    if files:
        metadata["qtip.files"] = KV(ARRAY, list(files), STRING)
        for name, content in files.items():
            metadata[f"qtip.file.{name}"] = (KV(STRING, content) if isinstance(content, str)
                                             else KV(ARRAY, content, UINT8))

    expected, optional = _hf_tensors(config, codes, config_path, "")
    index, handle = _safetensors_index(weights)
    with handle:
        _check_tensors(weights, index, expected, optional, lambda n: n)
        tensors = []
        for name in expected:
            if name not in index:
                continue
            shape, kind = index[name]

            def load(name=name):
                try:
                    return handle.get_tensor(name)
                except Exception as err:
                    raise FormatError(weights, name, "readable tensor data", f"{type(err).__name__}: "
                                      f"{err}") from None

            tensors.append((gguf_tensor_name(name), shape, _TYPE_BY_NAME[kind], load))
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            write_container(tmp, metadata, tensors)
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return dst


# ---------------------------------------------------------------------------------------------------------
# GGUF -> directory


def _key(g: GGUFContainer, key: str, kind: str, required: bool = True):
    """The value of metadata `key`, checked to be of `kind`: int, float, bool, str, [int], [str]."""
    kv = g.metadata.get(key)
    if kv is None:
        if required:
            raise FormatError(g.path, key, f"a {kind} metadata key", "missing")
        return None
    ok = {"int": kv.type in _INT_TYPES, "float": kv.type in _FLOAT_TYPES, "bool": kv.type == BOOL,
          "str": kv.type == STRING, "[int]": kv.type == ARRAY and kv.sub_type in _INT_TYPES,
          "[str]": kv.type == ARRAY and kv.sub_type == STRING}[kind]
    if not ok:
        raise FormatError(g.path, key, f"a {kind} value", f"a {kv.type_name()} value")
    return kv.value


def _typed_codes(g: GGUFContainer) -> dict[str, Code]:
    """{HF module name: Code} from the typed qtip.* keys."""
    from ..codes import MODES

    version = _key(g, "qtip.format_version", "int")
    if version != CONTAINER_VERSION:
        raise FormatError(g.path, "qtip.format_version", CONTAINER_VERSION, version)
    layout = _key(g, "qtip.layout", "str")
    if layout != LAYOUT:
        raise FormatError(g.path, "qtip.layout", repr(LAYOUT), repr(layout))
    tile = _key(g, "qtip.tile", "int")
    if tile != TILE:
        raise FormatError(g.path, "qtip.tile", TILE, tile)

    def code_at(prefix: str) -> Code:
        """A full code (L, K, V, mode required; tlut_shape absent = no table) under `prefix`."""
        fields = {f: _key(g, f"{prefix}{f}", "int") for f in ("L", "K", "V")}
        fields["mode"] = _key(g, f"{prefix}mode", "str")
        if fields["mode"] not in MODES:
            raise FormatError(g.path, f"{prefix}mode", f"one of {', '.join(MODES)}", repr(fields["mode"]))
        shape = _key(g, f"{prefix}tlut_shape", "[int]", False)
        if shape is not None and (len(shape) != 2 or min(shape) < 1):
            raise FormatError(g.path, f"{prefix}tlut_shape", "[rows, columns]", shape)
        fields["tlut_shape"] = None if shape is None else tuple(shape)  # absent: no table
        code = Code(**fields)
        _check_code(code, g.path, prefix)
        return code

    base = code_at("qtip.")
    modules = _key(g, "qtip.quantized_modules", "[str]")
    overrides = _key(g, "qtip.per_module", "[str]", False) or []
    codes = {}
    for name in modules:
        hf = hf_module_name(name)
        if hf is None or hf.endswith(("norm", "embed_tokens")) or hf in codes:
            raise FormatError(g.path, "qtip.quantized_modules", "unique GGUF names of linear layers "
                              "(blk.N.attn_q, ...)", repr(name))
        codes[hf] = base
    for name in overrides:
        hf = hf_module_name(name)
        if hf not in codes:
            raise FormatError(g.path, "qtip.per_module", "names listed in qtip.quantized_modules", repr(name))
        codes[hf] = code_at(f"qtip.per_module.{name}.")
    return codes


def _cross_check(g: GGUFContainer, typed: dict[str, Code], from_json: dict[str, Code]) -> None:
    if set(typed) != set(from_json):
        extra = sorted(set(typed) ^ set(from_json))
        raise FormatError(g.path, "qtip.quantized_modules", "the quantized_modules of qtip.hf_config",
                          f"a difference at {gguf_module_name(extra[0]) or extra[0]}")
    overrides = set(_key(g, "qtip.per_module", "[str]", False) or [])
    for name, code in typed.items():
        other = from_json[name]
        for field in Code.FIELDS:
            if getattr(code, field) != getattr(other, field):
                gname = gguf_module_name(name)
                key = f"qtip.per_module.{gname}.{field}" if gname in overrides else f"qtip.{field}"
                raise FormatError(g.path, key, f"{getattr(other, field)!r} (the quantization_config of "
                                  f"qtip.hf_config, module {gname})", repr(getattr(code, field)))


def _check_llama_keys(g: GGUFContainer, hf_config: dict) -> None:
    arch = _key(g, "general.architecture", "str")
    if arch != ARCHITECTURE:
        raise FormatError(g.path, "general.architecture", repr(ARCHITECTURE), repr(arch))
    for key, want in _llama_keys(hf_config, g.path, "qtip.hf_config ").items():
        got = _key(g, key, "float" if want.type == FLOAT32 else "int")
        same = (np.float32(got) == np.float32(want.value)) if want.type == FLOAT32 else got == want.value
        if not same:
            raise FormatError(g.path, key, f"{want.value!r} (from qtip.hf_config)", repr(got))


def _side_files(g: GGUFContainer) -> dict[str, str | bytes]:
    names = _key(g, "qtip.files", "[str]", False) or []
    files: dict[str, str | bytes] = {}
    for name in names:
        if name not in SIDE_FILES or name in files:
            raise FormatError(g.path, "qtip.files", f"unique names among {', '.join(SIDE_FILES)}", repr(name))
        key = f"qtip.file.{name}"
        kv = g.metadata.get(key)
        if kv is None:
            raise FormatError(g.path, key, "the file's contents (STRING or ARRAY[UINT8])", "missing")
        if kv.type == STRING:
            content = kv.value
            if name.endswith(".json"):
                _parse_json(content, g.path, key)
        elif kv.type == ARRAY and kv.sub_type == UINT8 and name == "tokenizer.model":
            content = bytes(kv.value)
        else:
            raise FormatError(g.path, key, "a STRING (ARRAY[UINT8] only for tokenizer.model)", kv.type_name())
        files[name] = content
    return files


def _replace_dir(tmp: Path, dst: Path) -> None:
    """Moves the finished directory `tmp` to `dst`, replacing an existing `dst` only at the very end."""
    if not dst.exists():
        tmp.rename(dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old.", dir=dst.parent))
    old.rmdir()
    dst.rename(old)
    try:
        tmp.rename(dst)
    except BaseException:
        old.rename(dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _check_destination(dst: Path) -> None:
    if dst.exists() and not (dst.is_dir() and (not any(dst.iterdir()) or (dst / CONFIG).is_file())):
        raise FileExistsError(f"{dst} exists and is not a model directory; refusing to replace it")


def read_gguf(src: str | Path, dst_dir: str | Path) -> Path:
    """Converts a GGUF written by write_gguf into a quantized directory (config.json, model.safetensors,
    tokenizer files: what checkpoint.save_quantized writes, byte for byte for config.json and the tokenizer
    files); returns `dst_dir`. Every key and tensor is validated first (FormatError). Atomic: built in a
    temporary directory beside `dst_dir` and renamed at the end; an existing model directory at `dst_dir` is
    replaced only then."""
    from safetensors.torch import save_file

    src, dst = Path(src), Path(dst_dir)
    _check_destination(dst)
    with open_gguf(src) as g:
        typed = _typed_codes(g)
        config_text = _key(g, "qtip.hf_config", "str")
        config = _parse_json(config_text, src, "qtip.hf_config")
        if not isinstance(config, dict) or not isinstance(config.get("quantization_config"), dict):
            raise FormatError(src, "qtip.hf_config", "a config.json object with a quantization_config",
                              type(config).__name__ if not isinstance(config, dict) else "no quantization_config")
        from_json = _json_codes(config["quantization_config"], src, "qtip.hf_config ")
        _cross_check(g, typed, from_json)
        _model_type(config, src, "qtip.hf_config ")
        _check_llama_keys(g, config)
        tie = _key(g, "qtip.tie_word_embeddings", "bool")
        if tie != bool(config.get("tie_word_embeddings", False)):
            raise FormatError(src, "qtip.tie_word_embeddings", f"{not tie} (from qtip.hf_config)", tie)
        found, names = {}, {}
        for gname, info in g.tensors.items():
            hf = hf_tensor_name(gname)
            if hf is None:
                raise FormatError(src, gname, "llama tensor names (token_embd.weight, blk.N.attn_q.trellis, ...)",
                                  "an unknown name")
            names[hf] = gname
            found[hf] = (info.shape, info.kind)
        layers = {int(m.group(1)) for m in map(_GGUF_LAYER.match, g.tensors) if m}
        if config["num_hidden_layers"] > len(layers):  # cheap check before building a skeleton that large
            raise FormatError(src, "llama.block_count", f"at most {len(layers)} (the blk.N tensors present)",
                              config["num_hidden_layers"])
        expected, optional = _hf_tensors(config, from_json, src, "qtip.hf_config ")
        _check_tensors(src, found, expected, optional, lambda n: names.get(n) or gguf_tensor_name(n) or n)
        files = _side_files(g)
        tensors = {hf: g.tensor(names[hf]) for hf in expected if hf in names}
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        (tmp / CONFIG).write_bytes(config_text.encode("utf-8"))
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        for name, content in files.items():
            (tmp / name).write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        _replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def load_gguf_model(src: str | Path, dtype: torch.dtype = torch.float32):
    """(model, tokenizer or None) from a GGUF written by write_gguf (read into a temporary directory and
    loaded with checkpoint.load_quantized; nothing is left on disk)."""
    from ..checkpoint import load_quantized

    with tempfile.TemporaryDirectory(prefix="qtip-gguf-") as tmp:
        return load_quantized(read_gguf(src, Path(tmp) / "model"), dtype=dtype)
