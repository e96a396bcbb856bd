"""Tiny checkpoints in the reference QTIP format (SPEC §3 and §5), built from scratch for the import tests.

A checkpoint is a random Llama: config.json in the style of the published uploads (a transformers-4.45 Llama
config plus `quip_params`, no tokenizer unless asked), and model.safetensors (or two shards plus
model.safetensors.index.json) holding the fp16 embeddings, norms and lm_head and, per linear, `trellis` (int16
((m/16)(n/16), 16K) in the reference kernel layout), `SU`, `SV` (scale folded in) and `tlut` (fp16 (512, 2)).
The trellises are random canonical streams (every int16 stream is a valid tail-biting trellis) permuted into
the kernel layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qtip_ops.formats.reference import LINEARS, canonical_to_reference

# Model dimension cases: all powers of two, or n = 2^a * K for Hadamard sizes K = 12 (192), 28 (448), 20 (320).
DIMS = {
    "pow2": dict(hidden=256, intermediate=512, heads=4, kv_heads=2),  # head_dim 64, k/v out 128
    "hadk": dict(hidden=192, intermediate=448, heads=6, kv_heads=2),  # head_dim 32, k/v out 64
    "had20": dict(hidden=320, intermediate=256, heads=5, kv_heads=1),  # head_dim 64, k/v out 64
}


@dataclass
class ReferenceCheckpoint:
    path: Path
    config: dict
    canonical: dict[str, torch.Tensor] = field(default_factory=dict)  # layer prefix -> our-layout trellis
    K: dict[str, int] = field(default_factory=dict)  # layer prefix -> bits per weight


def linear_shapes(hidden: int, intermediate: int, heads: int, kv_heads: int) -> dict[str, tuple[int, int]]:
    """(out, in) of the 7 linears of a Llama decoder layer."""
    head_dim = hidden // heads
    q, kv = heads * head_dim, kv_heads * head_dim
    return {"self_attn.q_proj": (q, hidden), "self_attn.k_proj": (kv, hidden), "self_attn.v_proj": (kv, hidden),
            "self_attn.o_proj": (hidden, q), "mlp.gate_proj": (intermediate, hidden),
            "mlp.up_proj": (intermediate, hidden), "mlp.down_proj": (hidden, intermediate)}


def random_layer(m: int, n: int, K: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One reference QuantizedLinear: random canonical streams, their kernel layout, SU, SV, tlut."""
    tiles = (m // 16) * (n // 16)
    canonical = torch.randint(-(1 << 15), 1 << 15, (tiles, 16 * K), generator=gen, dtype=torch.int32).to(torch.int16)

    def signs_times(size, lo, hi):
        sign = torch.where(torch.rand(size, generator=gen) < 0.5, -1.0, 1.0)
        return sign * (lo + (hi - lo) * torch.rand(size, generator=gen))

    return {
        "canonical": canonical,
        "trellis": canonical_to_reference(canonical, m, n, K),
        "SU": signs_times(n, 0.6, 1.4).to(torch.float16),
        # SV carries Wscale; sized so the layer's output stays O(1) for O(1) inputs.
        "SV": (signs_times(m, 0.6, 1.4) * 0.8 / n**0.5).to(torch.float16),
        "tlut": (torch.randn(512, 2, generator=gen) * 0.97).to(torch.float16),
    }


def quip_params(K: int, K_v_proj: int | None = None) -> dict:
    params = {"codebook": "bitshift", "codebook_version": 0, "L": 16, "K": K, "V": 2, "tlut_bits": 9,
              "decode_mode": "quantlut_sym", "td_x": 16, "td_y": 16, "split_for_tp": False, "skip_list": None}
    if K_v_proj is not None:
        params["K_v_proj"] = K_v_proj
    return params


def llama_config(dims: str, layers: int, vocab: int, K: int, K_v_proj: int | None = None,
                 tie: bool = False) -> dict:
    d = DIMS[dims]
    return {
        "_name_or_path": "meta-llama/Llama-2-7b-hf",
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": d["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": d["intermediate"],
        "max_position_embeddings": 256,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": d["heads"],
        "num_hidden_layers": layers,
        "num_key_value_heads": d["kv_heads"],
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tie,
        "torch_dtype": "float16",
        "transformers_version": "4.45.2",
        "use_cache": True,
        "vocab_size": vocab,
        "quip_params": quip_params(K, K_v_proj),
    }


def write_tokenizer(path: Path, vocab: int) -> None:
    """A tiny word-level fast tokenizer (tokenizer.json + tokenizer_config.json)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab)}}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(path)


def write_weights(path: Path, tensors: dict[str, torch.Tensor], shards: int = 1) -> None:
    from safetensors.torch import save_file

    if shards == 1:
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
        return
    names = list(tensors)
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k] for k in names[s::shards]}
        save_file(part, str(path / file), metadata={"format": "pt"})
        weight_map.update({k: file for k in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def reference_tensors(dims: str = "hadk", K: int = 2, K_v_proj: int | None = None, layers: int = 2, vocab: int = 96,
                      seed: int = 0, skip: tuple[str, ...] = (), tie: bool = False, rcp: int | None = None):
    """(config dict, tensors, canonical trellises, K per layer) of a random reference checkpoint. `skip` holds
    full layer prefixes stored as plain fp16 `.weight` (the reference's skip_list); `rcp` adds rcp/tp_rank
    scalars (int64, like a registered buffer) to every quantized layer."""
    gen = torch.Generator().manual_seed(seed)
    d = DIMS[dims]
    config = llama_config(dims, layers, vocab, K, K_v_proj, tie)
    if skip:
        config["quip_params"]["skip_list"] = list(skip)
    hidden = d["hidden"]

    def norm_weight():
        return (1 + 0.1 * torch.randn(hidden, generator=gen)).to(torch.float16)

    # Embedding rows of norm ~4: O(1) logits also when lm_head is tied to the embeddings.
    embed = torch.randn(vocab, hidden, generator=gen) * 4 / hidden**0.5
    tensors = {"model.embed_tokens.weight": embed.to(torch.float16), "model.norm.weight": norm_weight()}
    if not tie:
        tensors["lm_head.weight"] = (torch.randn(vocab, hidden, generator=gen) / hidden**0.5).to(torch.float16)
    canonical, bits = {}, {}
    shapes = linear_shapes(**d)
    for i in range(layers):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"model.layers.{i}.{norm}.weight"] = norm_weight()
        for name in LINEARS:
            prefix = f"model.layers.{i}.{name}"
            m, n = shapes[name]
            if prefix in skip:
                tensors[f"{prefix}.weight"] = (torch.randn(m, n, generator=gen) / n**0.5).to(torch.float16)
                continue
            k = K_v_proj if (K_v_proj is not None and name.endswith("v_proj")) else K
            layer = random_layer(m, n, k, gen)
            canonical[prefix], bits[prefix] = layer.pop("canonical"), k
            tensors.update({f"{prefix}.{key}": t for key, t in layer.items()})
            if rcp is not None:
                tensors[f"{prefix}.rcp"] = torch.tensor(rcp, dtype=torch.int64)
                tensors[f"{prefix}.tp_rank"] = torch.tensor(8, dtype=torch.int64)
    return config, tensors, canonical, bits


def build_reference_checkpoint(path: str | Path, *, shards: int = 1, tokenizer: bool = False,
                               **kwargs) -> ReferenceCheckpoint:
    """Writes a reference-format checkpoint directory at `path` (see reference_tensors for the options)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config, tensors, canonical, bits = reference_tensors(**kwargs)
    write_checkpoint(path, config, tensors, shards)
    if tokenizer:
        write_tokenizer(path, config["vocab_size"])
    return ReferenceCheckpoint(path, config, canonical, bits)


def write_checkpoint(path: Path, config: dict, tensors: dict[str, torch.Tensor], shards: int = 1) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    write_weights(path, tensors, shards)
