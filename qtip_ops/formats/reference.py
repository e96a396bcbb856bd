"""Import of reference QTIP checkpoints (SPEC §3 and §5) into the qtip_ops quantized directory.

A reference checkpoint is a Hugging Face Llama directory whose config.json carries `quip_params` and whose
7 linears per decoder layer (`model.layers.{i}.self_attn.{q,k,v,o}_proj`, `model.layers.{i}.mlp.{gate,up,
down}_proj`) are stored as `trellis` (int16, kernel layout), `SU`, `SV` (the scale folded in) and `tlut`
(fp16 (512, 2), the HYB table); everything else is a plain Llama. `convert_reference` validates all of it,
repacks each trellis once from the reference kernel layout into ours, and writes a `checkpoint.save_quantized`
directory atomically.

Both layouts hold the same canonical tail-biting stream per 16x16 tile (SPEC §3 `pack_trellis`: MSB-first
uint16 words, in-tile order = layout.py's order, tiles row-major). Ours stores the streams as they are; the
reference applies a byte permutation on top (SPEC §3 "kernel layout, part (ii)"):

* a tile's stream is 32K bytes in stream order (stream byte 2w is the high byte of word w);
* lane g (0..31) owns the K-byte chunk [Kg, Kg+K), stored byte-reversed (a little-endian load of the chunk
  gives its bits as one MSB-first integer);
* tiles go in 2x2 supertiles (tile rows 2A, 2A+1 x tile cols 2B, 2B+1), supertiles row-major; inside one,
  lane g stores its chunks of tiles (2A,2B), (2A+1,2B), (2A,2B+1), (2A+1,2B+1) in 4K contiguous bytes,
  lanes in order;
* the result is viewed as little-endian int16 in the same ((m/16)(n/16), 16K) shape.

`decode_reference_layout` reads that byte layout directly (the kernel's decode window), independently of
the permutation functions; the tests use it as the oracle.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from ..hadamard import hadamard_k
from ..nn import QTIPLinear
from .errors import FormatError

CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"

# The only configuration the reference has kernels for (SPEC §2 "kernel-supported configuration"); the
# importer reads exactly this. decode_mode quantlut_sym is our "hyb".
L, V, Q, TD = 16, 2, 9, 16
REFERENCE_KS = (2, 3, 4)
TLUT_SHAPE = (1 << Q, V)
REQUIRED_PARAMS = {"codebook": "bitshift", "codebook_version": 0, "L": L, "V": V, "tlut_bits": Q,
                   "decode_mode": "quantlut_sym", "td_x": TD, "td_y": TD}
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
LANES = 32
# Files copied as they are when the reference directory has them (it usually has none: the reference loads
# its tokenizer from the base model named in `_name_or_path`).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
                   "generation_config.json")

_SAFETENSORS_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
                       "I8": torch.int8, "U8": torch.uint8, "I16": torch.int16, "I32": torch.int32,
                       "I64": torch.int64, "BOOL": torch.bool}
_SCALE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# ----------------------------------------------------------------------------------------------------------
# Kernel layout <-> canonical streams
# ----------------------------------------------------------------------------------------------------------

def _check_layout(packed: torch.Tensor, m: int, n: int, K: int) -> tuple[int, int]:
    if K not in REFERENCE_KS:
        raise ValueError(f"reference kernel layout: K={K} is not supported, expected one of {REFERENCE_KS}")
    if m <= 0 or n <= 0 or m % (2 * TD) or n % (2 * TD):
        raise ValueError(f"reference kernel layout: weight shape ({m}, {n}) must have both dims positive multiples "
                         f"of {2 * TD} (2x2 supertiles of {TD}x{TD} tiles)")
    rows, cols = m // TD, n // TD
    if packed.dtype != torch.int16 or tuple(packed.shape) != (rows * cols, TD * K):
        raise ValueError(f"reference kernel layout: packed must be int16 of shape ({rows * cols}, {TD * K}) for "
                         f"m={m}, n={n}, K={K}; got {packed.dtype} {tuple(packed.shape)}")
    return rows, cols


def _stream_bytes(words: torch.Tensor) -> torch.Tensor:
    """MSB-first int16 words (..., W) -> the stream's bytes in stream order (..., 2W) uint8."""
    w = words.to(torch.int32) & 0xFFFF
    return torch.stack([w >> 8, w & 0xFF], dim=-1).flatten(-2).to(torch.uint8)


def _stream_words(data: torch.Tensor) -> torch.Tensor:
    """Inverse of _stream_bytes."""
    b = data.to(torch.int32).unflatten(-1, (-1, 2))
    w = (b[..., 0] << 8) | b[..., 1]
    return ((w ^ 0x8000) - 0x8000).to(torch.int16)


def _memory_bytes(words: torch.Tensor) -> torch.Tensor:
    """int16 words (..., W) -> the bytes a little-endian int16 tensor holds in memory (..., 2W) uint8.
    Arithmetic, so it does not depend on the host's byte order (safetensors files are little-endian)."""
    w = words.to(torch.int32) & 0xFFFF
    return torch.stack([w & 0xFF, w >> 8], dim=-1).flatten(-2).to(torch.uint8)


def _memory_words(data: torch.Tensor) -> torch.Tensor:
    """Inverse of _memory_bytes."""
    b = data.to(torch.int32).unflatten(-1, (-1, 2))
    w = b[..., 0] | (b[..., 1] << 8)
    return ((w ^ 0x8000) - 0x8000).to(torch.int16)


def canonical_to_reference(packed: torch.Tensor, m: int, n: int, K: int) -> torch.Tensor:
    """Our trellis (canonical streams, tiles row-major) -> the reference kernel layout (same shape, int16)."""
    rows, cols = _check_layout(packed, m, n, K)
    stream = _stream_bytes(packed)  # (tiles, 32K): tile (2A+a, 2B+b), lane g, chunk byte k
    chunks = stream.view(rows // 2, 2, cols // 2, 2, LANES, K).flip(-1)  # A a B b g k, chunks byte-reversed
    memory = chunks.permute(0, 2, 4, 3, 1, 5)  # A B g b a k: supertiles row-major, lanes, sub-tiles s = a + 2b
    return _memory_words(memory.reshape(rows * cols, 2 * TD * K))


def reference_to_canonical(packed: torch.Tensor, m: int, n: int, K: int) -> torch.Tensor:
    """Inverse of canonical_to_reference: the reference kernel layout -> our trellis layout."""
    rows, cols = _check_layout(packed, m, n, K)
    memory = _memory_bytes(packed).view(rows // 2, cols // 2, LANES, 2, 2, K)  # A B g b a k
    chunks = memory.permute(0, 4, 1, 3, 2, 5).flip(-1)  # A a B b g k, chunk bytes back in stream order
    return _stream_words(chunks.reshape(rows * cols, 2 * TD * K))


def decode_reference_layout(packed: torch.Tensor, m: int, n: int, K: int, tlut: torch.Tensor) -> torch.Tensor:
    """The (m, n) float32 weight Ŵ of a HYB trellis in the reference kernel layout, decoded straight from its
    bytes the way the kernel reads them: lane g of tile (R, C) loads its K-byte chunk little-endian (an
    MSB-first integer of stream bits [8Kg, 8Kg + 8K)), takes 16 more bits from lane g+1 (lane 31 from lane 0:
    tail-biting), and pair j is the 16-bit window at bit 2Kj; its two values land at sequence elements
    8g + 2j + {0, 1} of the tile (tile row (g>>2) + 8(j&1), col 2(g&3) + 8(j>>1) + f)."""
    rows, cols = _check_layout(packed, m, n, K)
    if tuple(tlut.shape) != TLUT_SHAPE:
        raise ValueError(f"tlut must have shape {TLUT_SHAPE}, got {tuple(tlut.shape)}")
    memory = _memory_bytes(packed).reshape(-1).to(torch.int64)
    tr = torch.arange(rows)[:, None]
    tc = torch.arange(cols)[None, :]
    supertile = (tr // 2) * (cols // 2) + tc // 2
    sub = (tr % 2) + 2 * (tc % 2)
    lanes = torch.arange(LANES)
    start = (supertile * 4 * LANES * K + sub * K)[..., None] + lanes * 4 * K  # (rows, cols, 32)
    chunk_bytes = memory[start[..., None] + torch.arange(K)]  # (rows, cols, 32, K) as stored
    chunk = (chunk_bytes << (8 * torch.arange(K))).sum(-1)  # little-endian load
    following = chunk.roll(-1, dims=-1)  # lane g + 1; lane 31 wraps to lane 0
    window = (chunk << 16) | (following >> (8 * K - 16))  # 8K + 16 bits, MSB first
    j = torch.arange(4)
    states = (window[..., None] >> (8 * K - 2 * K * j)) & 0xFFFF  # (rows, cols, 32 lanes, 4 pairs)
    # HYB (quantlut_sym): h = s(s+1) mod 2^16, index = bits 6..14, bit 15 flips the sign of element 0.
    h = (states * (states + 1)) & 0xFFFF
    idx = (h >> (15 - Q)) & ((1 << Q) - 1)
    table = tlut.to(torch.float32)
    first = torch.where((h & 0x8000) != 0, -table[idx, 0], table[idx, 0])
    values = torch.stack([first, table[idx, 1]], dim=-1)  # (rows, cols, 32, 4, 2)
    g = lanes[:, None, None]
    jj = j[None, :, None]
    f = torch.arange(2)[None, None, :]
    r = ((g >> 2) + 8 * (jj & 1)).expand(LANES, 4, 2)
    c = 2 * (g & 3) + 8 * (jj >> 1) + f
    tiles = torch.zeros(rows, cols, TD, TD, dtype=torch.float32)
    tiles[:, :, r, c] = values
    return tiles.permute(0, 2, 1, 3).reshape(m, n)


def linear_from_reference(trellis: torch.Tensor, SU: torch.Tensor, SV: torch.Tensor, tlut: torch.Tensor,
                          K: int) -> QTIPLinear:
    """A QTIPLinear (HYB, L=16, V=2) holding one reference layer: the trellis repacked into our layout, SU, SV
    (scale included) and tlut kept as they are. Computes the reference's forward (SPEC §4, rcp = 0)."""
    m, n = SV.numel(), SU.numel()
    layer = QTIPLinear(n, m, L, K, V, "hyb", TLUT_SHAPE, dtype=SU.dtype)
    layer.trellis = reference_to_canonical(trellis, m, n, K).contiguous()
    layer.SU = SU.detach().clone().contiguous()
    layer.SV = SV.detach().clone().contiguous()
    layer.tlut = tlut.detach().clone().contiguous()
    return layer


# ----------------------------------------------------------------------------------------------------------
# The reference directory
# ----------------------------------------------------------------------------------------------------------

def is_reference_dir(path: str | Path) -> bool:
    """True when `path` is a directory whose config.json has `quip_params` (a reference QTIP checkpoint)."""
    config = Path(path) / CONFIG
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("quip_params"), dict)


def _read_config(src: Path) -> tuple[dict, dict]:
    path = src / CONFIG
    if not path.is_file():
        raise FormatError(path, "file", "config.json with quip_params (a reference QTIP checkpoint)", "no such file")
    try:
        raw = json.loads(path.read_text())
    except ValueError as e:
        raise FormatError(path, "file", "valid JSON", f"a parse error ({e})") from e
    params = raw.get("quip_params") if isinstance(raw, dict) else None
    if not isinstance(params, dict):
        found = "no such key" if params is None else repr(params)
        raise FormatError(path, "quip_params", "an object with the reference's quantization parameters", found)
    for key, expected in REQUIRED_PARAMS.items():
        if key not in params:
            raise FormatError(path, f"quip_params.{key}", repr(expected), "no such key")
        if params[key] != expected or type(params[key]) is not type(expected):
            raise FormatError(path, f"quip_params.{key}", repr(expected), repr(params[key]))
    for key in ("K", "K_v_proj"):
        if params.get(key) is None:  # K_v_proj is optional (absent or null: v_proj uses K)
            if key == "K":
                raise FormatError(path, "quip_params.K", f"one of {REFERENCE_KS}", "no such key")
            continue
        if type(params[key]) is not int or params[key] not in REFERENCE_KS:
            raise FormatError(path, f"quip_params.{key}", f"one of {REFERENCE_KS}", repr(params[key]))
    if raw.get("model_type") != "llama":
        raise FormatError(path, "model_type", "'llama' (the reference models are Llamas)", repr(raw.get("model_type")))
    return raw, params


class _Weights:
    """The checkpoint's tensors, from model.safetensors or a sharded model.safetensors.index.json, opened
    lazily: shapes and dtypes are read from the headers, data only when asked for."""

    def __init__(self, src: Path):
        from safetensors import safe_open

        single, index = src / SINGLE, src / INDEX
        if single.is_file():
            files = [single]
            self.listing = single
        elif index.is_file():
            self.listing = index
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as e:
                raise FormatError(index, "weight_map", "a safetensors index: an object with 'weight_map'",
                                  f"{type(e).__name__}: {e}") from e
            if not isinstance(weight_map, dict):
                raise FormatError(index, "weight_map", "an object mapping tensor names to shard files",
                                  type(weight_map).__name__)
            files = [src / name for name in dict.fromkeys(weight_map.values())]
        else:
            raise FormatError(src, "weights", f"{SINGLE} or {INDEX}", "neither file")
        self.handles, self.file_of = {}, {}
        for path in files:
            if not path.is_file():
                raise FormatError(self.listing, f"shard {path.name}", f"the file {path}", "no such file")
            try:
                handle = safe_open(str(path), framework="pt")
            except Exception as e:  # safetensors raises its own error types for corrupt headers
                raise FormatError(path, "header", "a readable safetensors file", str(e)) from e
            self.handles[path] = handle
            for name in handle.keys():
                if name in self.file_of:
                    raise FormatError(path, name, "each tensor in one file", f"it also in {self.file_of[name]}")
                self.file_of[name] = path
        if index.is_file() and not single.is_file():
            for name, shard in weight_map.items():
                if self.file_of.get(name) != src / shard:
                    raise FormatError(src / shard, name, f"the tensor {index.name} lists in this shard",
                                      "no such tensor")

    def __contains__(self, name: str) -> bool:
        return name in self.file_of

    def where(self, name: str) -> Path:
        return self.file_of.get(name, self.listing)

    def meta(self, name: str) -> tuple[torch.dtype | str, tuple[int, ...]]:
        info = self.handles[self.file_of[name]].get_slice(name)
        code = info.get_dtype()
        return _SAFETENSORS_DTYPES.get(code, code), tuple(info.get_shape())

    def check(self, name: str, dtypes, shape: tuple[int, ...] | None, what: str):
        """Raises a FormatError naming the file and tensor unless `name` exists with one of `dtypes` and `shape`."""
        names = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
        expect = f"{names}" + ("" if shape is None else f" of shape {shape}")
        if name not in self:
            raise FormatError(self.listing, name, f"{what}: {expect}", "no such tensor")
        dtype, got = self.meta(name)
        if dtype not in dtypes:
            raise FormatError(self.where(name), name, f"{what}: dtype {names}",
                              f"dtype {str(dtype).removeprefix('torch.')}")
        if shape is not None and got != shape:
            raise FormatError(self.where(name), name, f"{what}: shape {shape}", f"shape {got}")

    def load(self, name: str) -> torch.Tensor:
        return self.handles[self.file_of[name]].get_tensor(name)


def _meta_model(raw: dict, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig.from_dict({k: v for k, v in raw.items() if k != "quip_params"})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model


def _quantized_layer(weights: _Weights, config: Path, prefix: str, m: int, n: int, K: int) -> QTIPLinear:
    for dim, what in ((m, "output"), (n, "input")):
        if dim % (2 * TD):
            raise FormatError(config, f"{what} dimension of layer {prefix}",
                              f"a multiple of {2 * TD} (the reference kernel layout tiles weights in 2x2 "
                              f"supertiles of 16x16 tiles)", dim)
        try:
            hadamard_k(dim)
        except ValueError as e:
            raise FormatError(config, f"{what} dimension of layer {prefix}",
                              "2^a or 2^a*K for a Hadamard size K of SPEC §4", f"{dim} ({e})") from e
    weights.check(f"{prefix}.trellis", (torch.int16,), ((m // TD) * (n // TD), TD * K),
                  f"trellis of a {m}x{n} weight at K={K} bits")
    weights.check(f"{prefix}.SU", _SCALE_DTYPES, (n,), "input signs/scales")
    weights.check(f"{prefix}.SV", _SCALE_DTYPES, (m,), "output signs/scales with Wscale")
    weights.check(f"{prefix}.tlut", (torch.float16,), TLUT_SHAPE, "HYB lookup table")
    for name in ("rcp", "tp_rank"):
        key = f"{prefix}.{name}"
        if key in weights:
            _, shape = weights.meta(key)
            if int(torch.tensor(shape).prod()) != 1:
                raise FormatError(weights.where(key), key, "a scalar", f"shape {shape}")
    if f"{prefix}.rcp" in weights:
        rcp = weights.load(f"{prefix}.rcp").reshape(()).item()
        if rcp != 0:
            raise FormatError(weights.where(f"{prefix}.rcp"), f"{prefix}.rcp",
                              f"0: layer {prefix} is split for tensor parallelism (per-shard Hadamard transforms "
                              f"and scales), which is not supported", rcp)
    return linear_from_reference(weights.load(f"{prefix}.trellis"), weights.load(f"{prefix}.SU"),
                                 weights.load(f"{prefix}.SV"), weights.load(f"{prefix}.tlut"), K)


def _build_model(src: Path):
    """The converted model (unquantized tensors in the checkpoint's dtype) and that dtype."""
    from ..models import set_submodule

    raw, params = _read_config(src)
    weights = _Weights(src)
    embed = "model.embed_tokens.weight"
    weights.check(embed, (torch.float16, torch.bfloat16, torch.float32), None, "token embeddings")
    dtype = weights.meta(embed)[0]
    try:
        model = _meta_model(raw, dtype)
    except (TypeError, ValueError, KeyError) as e:
        raise FormatError(src / CONFIG, "Llama configuration", "a configuration transformers' LlamaConfig accepts",
                          f"{type(e).__name__}: {e}") from e
    layers = model.model.layers
    consumed = set()
    for i, layer in enumerate(layers):
        for name in LINEARS:
            prefix = f"model.layers.{i}.{name}"
            linear = layer.get_submodule(name)
            m, n = linear.out_features, linear.in_features
            if f"{prefix}.trellis" in weights or f"{prefix}.weight" not in weights:
                K = params.get("K_v_proj") or params["K"] if name.endswith("v_proj") else params["K"]
                set_submodule(model, prefix, _quantized_layer(weights, src / CONFIG, prefix, m, n, K))
                consumed.update(f"{prefix}.{t}" for t in ("trellis", "SU", "SV", "tlut", "rcp", "tp_rank"))
            # else: a layer in skip_list, kept as a plain linear (loaded below with the other tensors)
    tensors = {}
    expected = {k: v for k, v in model.state_dict().items() if v.is_meta}
    tied = getattr(model.config, "tie_word_embeddings", False)
    for name, t in expected.items():
        if name == "lm_head.weight" and tied and name not in weights:
            continue
        weights.check(name, (torch.float16, torch.bfloat16, torch.float32), tuple(t.shape), "unquantized weight")
        tensors[name] = weights.load(name)
        consumed.add(name)
    unexpected = sorted(k for k in weights.file_of if k not in consumed and not k.endswith("rotary_emb.inv_freq"))
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
        raise FormatError(weights.where(unexpected[0]), shown, "only the Llama weights and the trellis, SU, SV, "
                          "tlut, rcp and tp_rank of the quantized linears", f"{len(unexpected)} unexpected tensor(s)")
    model.load_state_dict(tensors, strict=False, assign=True)
    if tied:
        model.tie_weights()
    left = [k for k, v in model.state_dict().items() if v.is_meta]
    if left:  # a Llama variant with tensors this importer does not know
        raise FormatError(weights.listing, ", ".join(left[:5]), "these tensors of the model", "no such tensors")
    model.eval()
    return model, dtype


def convert_reference(src_dir: str | Path, dst_dir: str | Path) -> Path:
    """Converts the reference QTIP checkpoint directory `src_dir` into a qtip_ops quantized directory at
    `dst_dir` (checkpoint.save_quantized layout: trellises repacked into our layout once, SU/SV/tlut as stored,
    the other tensors in the checkpoint's dtype, tokenizer files copied when present). Everything is validated
    before anything is written, and the output is built in a temporary directory renamed at the end, so a
    failed or interrupted conversion leaves no output. An existing `dst_dir` is replaced only if it is empty or
    a qtip_ops quantized directory. Returns the output path."""
    from ..checkpoint import save_quantized
    from ..models import is_quantized_dir

    src, dst = Path(src_dir), Path(dst_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"reference checkpoint directory {src} does not exist")
    if dst.exists():
        if dst.resolve() == src.resolve():
            raise ValueError(f"{dst}: the output directory must differ from the reference checkpoint")
        if not dst.is_dir() or (any(dst.iterdir()) and not is_quantized_dir(dst)):
            raise FileExistsError(f"{dst} exists and is not a qtip_ops quantized directory; refusing to replace it")
    model, dtype = _build_model(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        out = save_quantized(model, tmp / "converted", tokenizer=None, dtype=dtype)
        _copy_tokenizer(src, out)
        if dst.exists():
            shutil.rmtree(dst)
        out.rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def _copy_tokenizer(src: Path, out: Path) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
