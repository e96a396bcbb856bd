"""Quantize a causal LM layer by layer: capture the inputs of the first decoder layer once, then for each
layer accumulate the input Hessians of its linears, quantize them, and run the quantized layer to produce
the next layer's inputs. Only one layer's Hessians are ever in memory.

Device: the work runs on `device` (default: where the decoder layers are). A model kept on the CPU with
device="cuda" is quantized with one decoder layer at a time on the GPU (moved there, quantized, moved back),
so GPU memory is bounded by one layer, its Hessians and the calibration activations."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..models import decoder_layers, linear_layers, set_submodule
from .device import module_device, to_device
from .linear import CodeConfig, quantize_weight, to_qtip_linear


@dataclass
class LayerReport:
    name: str
    shape: tuple[int, int]
    proxy_error: float
    seconds: float


class _StopForward(Exception):
    pass


def capture_first_layer_inputs(model: nn.Module, input_ids: torch.Tensor, batch_size: int):
    """[(hidden_states, kwargs)] as the first decoder layer receives them, one entry per batch."""
    layers = decoder_layers(model)
    captured = []

    def hook(module, args, kwargs):
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.append((hidden, kwargs))
        raise _StopForward

    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in input_ids.split(batch_size):
            try:
                model(batch, use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()
    return captured


def run_layer(layer: nn.Module, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
    out = layer(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out


class HessianAccumulator:
    """Σ x xᵀ / count (fp64) of every linear's input in one module; linears fed the very same tensor
    (q/k/v, gate/up) share one Hessian."""

    def __init__(self, module: nn.Module):
        self.linears = linear_layers(module)
        self.group_of: dict[str, str] = {}
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self._seen: list[tuple[str, torch.Tensor]] = []
        self._handles = [lin.register_forward_pre_hook(self._hook(name)) for name, lin in self.linears.items()]

    def _hook(self, name):
        def hook(module, args):
            self._seen.append((name, args[0]))

        return hook

    def flush(self) -> None:
        """Accumulates the inputs seen since the last flush (call after each forward)."""
        first_name_of: dict[int, str] = {}
        for name, x in self._seen:
            group = first_name_of.setdefault(id(x), name)
            self.group_of[name] = group
            if group != name:
                continue
            x2 = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
            self.sums[group] = self.sums.get(group, 0) + x2.T @ x2
            self.counts[group] = self.counts.get(group, 0) + x2.shape[0]
        self._seen.clear()

    def hessian(self, name: str) -> torch.Tensor:
        group = self.group_of[name]
        return self.sums[group] / self.counts[group]

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def layer_hessians(layer: nn.Module, inputs) -> HessianAccumulator:
    """Runs the (unquantized) layer on every input batch and returns its linears' Hessians."""
    acc = HessianAccumulator(layer)
    try:
        for hidden, kwargs in inputs:
            run_layer(layer, hidden, kwargs)
            acc.flush()
    finally:
        acc.close()
    return acc


def quantize_layer(layer: nn.Module, idx: int, prefix: str, acc: HessianAccumulator, code: CodeConfig,
                   skip: tuple[str, ...] = (), seed: int = 0, on_layer=None) -> list[LayerReport]:
    """Replaces the linears of decoder layer `idx` by QTIPLinears, in place, from the Hessians in `acc`."""
    reports = []
    for j, (name, linear) in enumerate(acc.linears.items()):
        full = f"{prefix}.{idx}.{name}"
        if any(s in full for s in skip):
            continue
        start = time.perf_counter()
        q = quantize_weight(linear.weight, acc.hessian(name), code, seed=seed * 1_000_003 + idx * 64 + j)
        set_submodule(layer, name, to_qtip_linear(q, code, linear.bias).to(linear.weight.device))
        reports.append(LayerReport(full, tuple(linear.weight.shape), q.proxy_error, time.perf_counter() - start))
        if on_layer is not None:
            on_layer(reports[-1])
    return reports


def next_inputs(layer: nn.Module, inputs) -> list:
    return [(run_layer(layer, hidden, kwargs), kwargs) for hidden, kwargs in inputs]


def layers_prefix(model: nn.Module) -> str:
    layers = decoder_layers(model)
    return next(name for name, m in model.named_modules() if m is layers)


def calibration_inputs(model: nn.Module, calibration_ids: torch.Tensor, batch_size: int, device) -> list:
    """The first decoder layer's inputs (captured where the model is), moved to `device`."""
    return to_device(capture_first_layer_inputs(model, calibration_ids, batch_size), device)


@torch.no_grad()
def quantize_model(model: nn.Module, calibration_ids: torch.Tensor, code: CodeConfig, batch_size: int = 8,
                   skip: tuple[str, ...] = (), seed: int = 0, progress: bool = True,
                   on_layer=None, device: torch.device | str | None = None) -> list[LayerReport]:
    """Replaces every nn.Linear inside the decoder layers (except names containing an entry of `skip`) by a
    QTIPLinear, in place. Returns one report per quantized linear. `device`: where Hessians, BlockLDLQ and
    Viterbi run (default: the decoder layers' device); layers elsewhere visit it one at a time."""
    layers = decoder_layers(model)
    prefix = layers_prefix(model)
    device = module_device(layers[0]) if device is None else torch.device(device)
    inputs = calibration_inputs(model, calibration_ids, batch_size, device)
    reports: list[LayerReport] = []
    bar = tqdm(total=len(layers), desc=f"QTIP K={code.K} L={code.L} {code.mode}", unit="layer", disable=not progress)
    for idx, layer in enumerate(layers):
        home = module_device(layer)
        layer.to(device)
        acc = layer_hessians(layer, inputs)
        layer_reports = quantize_layer(layer, idx, prefix, acc, code, skip, seed, on_layer)
        reports.extend(layer_reports)
        del acc
        inputs = next_inputs(layer, inputs)
        layer.to(home)
        if layer_reports:
            bar.set_postfix(proxy=f"{sum(r.proxy_error for r in layer_reports) / len(layer_reports):.4f}")
        bar.update()
    bar.close()
    return reports
