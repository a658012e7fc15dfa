"""How a fold's model inputs lie in memory: arrays TensorFlow can use without copying them, and
the numeric block with its 0/1 columns stored as bits (``PackedColumns``).

A wide table's numeric block is mostly 0/1 columns: bench/scale.py's 100 raw columns become 174,
80 of them missing indicators and 14 one-hot. As float32 each is 4 bytes for one bit; after the
table itself they were the largest part of a 1M-row fold's memory. Packed, the fold holds the
other columns as float32 and those as bits, 8 to a byte (0.46 of the float32 block there; 0.6
with a byte each). The network still receives the float32 block: the input pipeline puts each
batch back together (datasets.py), so the model, its saved form and its export are unchanged, and
so are the values (0 and 1 are exact in both types).
"""
from __future__ import annotations

import numpy as np

ALIGNMENT = 64  # bytes: what TensorFlow requires of a buffer it shares (datasets.as_tensor)


def aligned_empty(shape: tuple, dtype) -> np.ndarray:
    """np.empty whose data starts on a 64-byte boundary, so that TensorFlow can use the array's
    memory as a tensor without copying it (numpy guarantees only 16 bytes)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    offset = -raw.ctypes.data % ALIGNMENT
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


class PackedColumns:
    """A float32 block (rows x width) whose columns ``flag_cols`` hold only 0 and 1, stored as
    ``values`` (the other columns, float32) and ``flags`` (those, as bits: ``np.packbits`` of each
    row, most significant bit first). Reads as the float32 block: ``block[rows]`` and
    ``np.asarray(block)`` give float32 arrays; ``order`` puts ``[values, flags]`` side by side back
    into the block's column order."""

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, rows: int, width: int, flag_cols):
        self.flag_cols = np.asarray(sorted(flag_cols), dtype=np.int64)
        self.value_cols = np.setdiff1d(np.arange(width), self.flag_cols)
        self.order = np.argsort(np.concatenate([self.value_cols, self.flag_cols]))
        self.in_order = bool((self.order == np.arange(width)).all())  # the flags are the last columns
        self.values = aligned_empty((rows, len(self.value_cols)), np.float32)
        self.flags = aligned_empty((rows, -(-len(self.flag_cols) // 8)), np.uint8)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.values), len(self.order)

    @property
    def flag_count(self) -> int:
        return len(self.flag_cols)

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.flags.nbytes

    def __len__(self) -> int:
        return len(self.values)

    def __setitem__(self, rows: slice, block: np.ndarray) -> None:
        flags = block[:, self.flag_cols]
        if not np.isin(flags, (0, 1)).all():  # a transformer that is not what the caller said it is
            raise ValueError("PackedColumns: a flag column holds a value other than 0 and 1")
        self.values[rows] = block[:, self.value_cols]
        self.flags[rows] = np.packbits(flags.astype(np.uint8), axis=-1)

    def __getitem__(self, key):
        rows, cols = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        flags = np.unpackbits(self.flags[rows], axis=-1, count=self.flag_count)
        both = np.concatenate([self.values[rows], flags.astype(np.float32)], axis=-1)
        out = both[..., self.order]
        return out[(Ellipsis, *cols)] if cols else out

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)
