"""qtip_ops: QTIP trellis-coded quantized weights as PyTorch custom ops.

Importing the package registers the `torch.ops.qtip.*` ops (rht, decode_states, bitshift_decode,
viterbi_quantize, gemv) with their CPU (and, where built, CUDA) kernels, fake kernels and autograd.
"""

from .cpu import available_cpu_paths, cpu_path, set_cpu_path
from .codes import MODES, code_rms, default_hyb_tlut, random_lut
from .hadamard import hadamard_dense, hadamard_k
from .layout import dense_to_sequences, sequences_to_dense
from .ops import bitshift_decode, decode_states, decode_weight, gemv, rht, viterbi_quantize
from .quantize_matrix import QuantizedMatrix, quantize_matrix

__version__ = "0.1.0"

__all__ = [
    "MODES",
    "QuantizedMatrix",
    "available_cpu_paths",
    "bitshift_decode",
    "code_rms",
    "cpu_path",
    "decode_states",
    "decode_weight",
    "default_hyb_tlut",
    "dense_to_sequences",
    "gemv",
    "hadamard_dense",
    "hadamard_k",
    "quantize_matrix",
    "random_lut",
    "rht",
    "sequences_to_dense",
    "set_cpu_path",
    "viterbi_quantize",
]

from . import hf as _hf  # registers the "qtip" quantization method with transformers when it is installed
