"""Weight layout of `qtip::gemv`: how a dense (m, n) weight maps onto packed trellis sequences.

* The weight is cut into 16x16 tiles; tile (i, j) covers rows 16i..16i+15 and columns 16j..16j+15.
* Tiles are stored row-major over the (m/16, n/16) grid: packed row i * (n/16) + j.
* Each tile is one tail-biting trellis sequence of 256 weights (16*K int16 words). Sequence element p
  sits at tile row r(p), column c(p), with p = 8g + 2j + f (g < 32, j < 4, f < 2):
      r = (g >> 2) + 8 * (j & 1),   c = 2 * (g & 3) + 8 * (j >> 1) + f.
  This is the A-fragment order of the mma.m16n8k16 tensor-core instruction (the reference kernel's
  in-tile order), so a GPU warp decodes directly into tensor-core registers.
"""

from functools import lru_cache

import torch

TILE = 16
TILE_WEIGHTS = TILE * TILE


@lru_cache(maxsize=None)
def sequence_to_tile() -> torch.Tensor:
    """Index q = 16 r + c of the tile position of each sequence element p (a permutation of 0..255)."""
    p = torch.arange(TILE_WEIGHTS)
    g, j, f = p >> 3, (p >> 1) & 3, p & 1
    rows = (g >> 2) + 8 * (j & 1)
    cols = 2 * (g & 3) + 8 * (j >> 1) + f
    return rows * TILE + cols


@lru_cache(maxsize=None)
def tile_to_sequence() -> torch.Tensor:
    return torch.argsort(sequence_to_tile())


def check_tiled_shape(m: int, n: int) -> None:
    if m <= 0 or n <= 0 or m % TILE or n % TILE:
        raise ValueError(f"weight shape ({m}, {n}) must have both dims positive multiples of {TILE}")


# With p = 32a + 8b + 4c + 2d + f (a < 8, b < 4, c, d, f < 2, i.e. g = 4a + b and j = 2c + d), the element
# sits at row a + 8d, column 2b + 8c + f: the in-tile order is a pure axis permutation, so the layout
# converts with view/permute (no index tensors: cheap, and traceable by torch.compile / export).
_SEQ_AXES = (8, 4, 2, 2, 2)  # a, b, c, d, f
_TILE_AXES = (2, 8, 2, 4, 2)  # d, a, c, b, f  (row = (d, a), column = (c, b, f))


def dense_to_sequences(weight: torch.Tensor) -> torch.Tensor:
    """(m, n) weight -> (m/16 * n/16, 256) trellis sequences in packed-row and in-tile order."""
    m, n = weight.shape
    check_tiled_shape(m, n)
    tiles = weight.reshape(m // TILE, TILE, n // TILE, TILE).permute(0, 2, 1, 3).reshape(-1, *_TILE_AXES)
    return tiles.permute(0, 2, 4, 3, 1, 5).reshape(-1, TILE_WEIGHTS)


def sequences_to_dense(sequences: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """Inverse of dense_to_sequences."""
    check_tiled_shape(m, n)
    tiles = sequences.reshape(-1, *_SEQ_AXES).permute(0, 4, 1, 3, 2, 5)
    return tiles.reshape(m // TILE, n // TILE, TILE, TILE).permute(0, 2, 1, 3).reshape(m, n)
