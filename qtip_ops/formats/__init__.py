"""Model containers: reading and writing QTIP-quantized models in other file formats.

* `qtip_ops.formats.gguf`: one `.gguf` file (packed trellises as standard I16 tensors, every QTIP parameter
  under `qtip.*` keys; see export/FORMAT.md) <-> the quantized safetensors directory of
  `qtip_ops.checkpoint` (`write_gguf`, `read_gguf`, `load_gguf_model`).
* `FormatError` (`qtip_ops.formats.errors`): the error every reader raises on a malformed file; the message
  names the file, the tensor or key, and the expected value.

Submodules are imported lazily: `import qtip_ops.formats` costs nothing until a converter is used.
"""

from __future__ import annotations

from .errors import FormatError

__all__ = ["FormatError", "load_gguf_model", "read_gguf", "write_gguf"]


def __getattr__(name: str):
    if name in ("load_gguf_model", "read_gguf", "write_gguf"):
        from . import gguf

        return getattr(gguf, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
