"""Distributed quantization (qtip_ops.quantize.distributed) with 2 processes on the gloo backend (CPU): the
`exact` mode writes a checkpoint identical, tensor for tensor, to the single-process pipeline; the
`parallel` mode quantizes every layer, and rank 0's block (which starts from the same inputs) matches."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from qtip_ops.quantize import CodeConfig

LAYERS = 4
SEED = 0


def _code():
    return CodeConfig(K=2, L=8)


def _calibration_ids(vocab):
    return torch.randint(0, vocab, (4, 32), generator=torch.Generator().manual_seed(1))


def _load(model_dir):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def _save(model, out):
    from qtip_ops.checkpoint import round_unquantized, save_quantized

    round_unquantized(model, torch.float16)
    save_quantized(model, out, None, torch.float16)


def _worker(rank, world, port, model_dir, out, mode):
    from qtip_ops.quantize.distributed import quantize_model_distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # the reference runs with one thread too: same kernels, same roundings
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _load(model_dir)
        reports = quantize_model_distributed(model, _calibration_ids(model.config.vocab_size), _code(),
                                             batch_size=2, seed=SEED, device="cpu", mode=mode)
        assert len(reports) == 7 * LAYERS
        if rank == 0:
            _save(model, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    from qtip_ops.quantize import quantize_model

    root = tmp_path_factory.mktemp("dist")
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root / "model")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = _load(root / "model")
        quantize_model(model, _calibration_ids(config.vocab_size), _code(), batch_size=2, seed=SEED,
                       progress=False, device="cpu")
        _save(model, root / "single")
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.mark.parametrize("mode", ["exact", "parallel"])
def test_two_processes_gloo(setup, mode):
    out = setup / f"two-{mode}"
    mp.spawn(_worker, args=(2, _free_port(), str(setup / "model"), str(out), mode), nprocs=2, join=True)
    single, multi = _tensors(setup / "single"), _tensors(out)
    assert single.keys() == multi.keys()
    trellis = [k for k in multi if k.endswith(".trellis")]
    assert len(trellis) == 7 * LAYERS
    if mode == "exact":
        for k in single:
            assert torch.equal(single[k], multi[k]), k
    else:
        first_block = tuple(f"model.layers.{i}." for i in range(LAYERS // 2))  # rank 0's layers
        same = [k for k in single if k.startswith(first_block) or not k.startswith("model.layers.")]
        for k in same:
            assert torch.equal(single[k], multi[k]), k
