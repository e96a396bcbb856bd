"""Quantizing one model across the ranks of a torch.distributed job (`torchrun`, any backend): each rank
takes whole decoder layers, and every quantized layer is broadcast from its owner, so every rank ends with
the whole quantized model and rank 0 writes the checkpoint.

The layer-by-layer pipeline feeds the *quantized* outputs of layer i to layer i+1 (model.py), so the layers
are not independent. Two honest ways to share them out:

* ``exact`` (owner of layer i = i mod world): the ranks walk the layers together. The owner accumulates
  layer i's Hessians and quantizes it; the quantized layer is broadcast; every rank installs it and runs it to
  get layer i+1's inputs (each rank computes its own activations: no activation traffic). The result is
  identical, tensor for tensor, to a single-process `quantize_model` with the same seed (given the same
  kernels and thread counts). Cost: the layers are still quantized one after another, so the wall time is
  about the single-GPU time; what it spreads is memory (Hessians and BlockLDLQ buffers live on one rank
  at a time) and it gives a checkpoint bit-identical to the sequential one.
* ``parallel`` (rank r owns a contiguous block of about L/world layers): each rank runs the unquantized
  layers before its block to get the block's inputs, then quantizes its block exactly like the sequential
  pipeline (quantized outputs fed forward inside the block). All ranks quantize at once, so the wall time is
  about 1/world of the quantization plus the forward passes before the block. The price: the first layer of
  each block (other than rank 0's) sees activations of unquantized earlier layers, as the reference
  implementation's precomputed Hessians do for every layer. With world = 1 it is the sequential pipeline.
"""

from __future__ import annotations

import copy
import os

import torch
import torch.distributed as dist
from torch import nn

from ..models import decoder_layers, set_submodule
from ..nn import QTIPLinear
from .device import default_device, module_device
from .linear import CodeConfig
from .model import (LayerReport, calibration_inputs, layer_hessians, layers_prefix, next_inputs,
                    quantize_layer)

MODES = ("exact", "parallel")


def init_from_env(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Joins the job torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment): NCCL on
    GPUs, gloo otherwise. Returns (rank, world size, this rank's compute device)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = default_device(local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    return dist.get_rank(), dist.get_world_size(), device


def layer_owners(num_layers: int, world: int, mode: str) -> list[int]:
    """The rank that quantizes each layer."""
    if mode == "exact":
        return [i % world for i in range(num_layers)]
    if mode == "parallel":
        return [i * world // num_layers for i in range(num_layers)]
    raise ValueError(f"unknown distributed mode {mode!r}; expected one of {', '.join(MODES)}")


def _quantized_modules(layer: nn.Module) -> dict[str, QTIPLinear]:
    """CPU copies of the layer's QTIPLinears, to broadcast."""
    return {name: copy.deepcopy(m).cpu() for name, m in layer.named_modules() if isinstance(m, QTIPLinear)}


def _share_layer(layer: nn.Module, owner: int, rank: int, reports: list[LayerReport], device) -> list[LayerReport]:
    """Broadcasts the owner's quantized linears (and their reports) and installs them on the other ranks."""
    payload = [{"modules": _quantized_modules(layer), "reports": reports} if rank == owner else None]
    dist.broadcast_object_list(payload, src=owner)
    if rank != owner:
        for name, module in payload[0]["modules"].items():
            set_submodule(layer, name, module.to(device))
    return payload[0]["reports"]


@torch.no_grad()
def quantize_model_distributed(model: nn.Module, calibration_ids: torch.Tensor, code: CodeConfig,
                               batch_size: int = 8, skip: tuple[str, ...] = (), seed: int = 0,
                               on_layer=None, device: torch.device | str | None = None,
                               mode: str = "exact") -> list[LayerReport]:
    """quantize_model over the ranks of the current process group (see the module docstring for `mode`).
    Every rank calls it with the same model and data; every rank returns with the whole model quantized
    and all the reports. `on_layer` is called for every linear on every rank that passes it."""
    rank, world = dist.get_rank(), dist.get_world_size()
    layers = decoder_layers(model)
    prefix = layers_prefix(model)
    owners = layer_owners(len(layers), world, mode)
    device = module_device(layers[0]) if device is None else torch.device(device)
    inputs = calibration_inputs(model, calibration_ids, batch_size, device)
    reports: dict[int, list[LayerReport]] = {}

    if mode == "exact":
        for idx, layer in enumerate(layers):
            home = module_device(layer)
            layer.to(device)
            mine = []
            if owners[idx] == rank:
                acc = layer_hessians(layer, inputs)
                mine = quantize_layer(layer, idx, prefix, acc, code, skip, seed)
                del acc
            reports[idx] = _share_layer(layer, owners[idx], rank, mine, device)
            for r in reports[idx] if on_layer is not None else ():
                on_layer(r)
            inputs = next_inputs(layer, inputs)
            layer.to(home)
    else:
        mine = [i for i, r in enumerate(owners) if r == rank]
        for idx in range(max(mine) + 1 if mine else 0):
            layer = layers[idx]
            home = module_device(layer)
            layer.to(device)
            if owners[idx] == rank:
                acc = layer_hessians(layer, inputs)
                reports[idx] = quantize_layer(layer, idx, prefix, acc, code, skip, seed)
                del acc
            if idx < max(mine):
                inputs = next_inputs(layer, inputs)
            layer.to(home)
        del inputs
        for idx, layer in enumerate(layers):  # gather: every rank receives every layer, in order
            reports[idx] = _share_layer(layer, owners[idx], rank, reports.get(idx, []), module_device(layer))
            for r in reports[idx] if on_layer is not None else ():
                on_layer(r)
    return [r for idx in range(len(layers)) for r in reports[idx]]
