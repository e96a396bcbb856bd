"""The one error type of the model-file readers and writers (GGUF, the quantized safetensors directory,
reference checkpoints)."""

from __future__ import annotations

from pathlib import Path


class FormatError(ValueError):
    """A model file that does not match its format: the message names the file, the tensor or key, and the
    expected value (and what was found, when there is something to show).

        raise FormatError(path, "blk.0.attn_q.trellis", "shape (144, 32)", "shape (144, 16)")
        # -> "model.gguf: blk.0.attn_q.trellis: expected shape (144, 32), found shape (144, 16)"
    """

    def __init__(self, file: str | Path, item: str, expected: object, found: object = None):
        self.file, self.item, self.expected, self.found = str(file), item, expected, found
        message = f"{self.file}: {item}: expected {expected}"
        if found is not None:
            message += f", found {found}"
        super().__init__(message)

    def __reduce__(self):  # picklable (multiprocessing, pytest-xdist) despite the custom signature
        return type(self), (self.file, self.item, self.expected, self.found)
