"""QTIP quantization of Hugging Face causal LMs (calibration, incoherence processing, BlockLDLQ + Viterbi)."""

from .linear import CodeConfig, QuantizedWeight, quantize_weight, to_qtip_linear
from .model import LayerReport, quantize_model
from .rtn import rtn_quantize

__all__ = ["CodeConfig", "LayerReport", "QuantizedWeight", "quantize_model", "quantize_weight", "rtn_quantize",
           "to_qtip_linear"]
