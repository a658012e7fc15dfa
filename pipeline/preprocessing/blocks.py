"""The fold's dense numeric block: each block of columns through its own fitted transformer, the
outputs side by side (what scikit-learn's ColumnTransformer does at transform time).

Written here rather than fitting a ColumnTransformer because ``ColumnTransformer.fit`` is its
``fit_transform``: it computes every block's output for all of the fold's training rows, holds
them and stacks them, a full float copy of the fold's numeric block that fitting never uses; with
each block's own float copies beside it, that was the peak of a large run (bench/scale.py: 7x the
float32 table at 1M rows). Here a block is fitted with ``fit`` alone (a Pipeline then transforms
only through its intermediate steps), one block at a time, and blocks stay narrow (table.py
splits the numeric columns into groups), so the transient copies are a group's, not the table's.
The fitted attributes keep ColumnTransformer's names (``transformers_``, ``named_transformers_``,
``output_indices_``): the run folder's readers (preprocessing.json, the continuous columns) take
either, so runs saved with a ColumnTransformer still load and predict.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


class DenseBlocks:
    """``blocks``: [(name, transformer, column names)], names unique."""

    def __init__(self, blocks: list[tuple[str, object, list[str]]]):
        self.blocks = blocks

    def fit(self, frame: pd.DataFrame, y=None) -> "DenseBlocks":
        for _, transformer, cols in self.blocks:
            transformer.fit(frame[cols], y)
        return self._fitted(frame)

    def fit_transform(self, frame: pd.DataFrame, y=None) -> np.ndarray:
        """For target-aware encoders, whose fit_transform cross-fits the training rows."""
        out = np.hstack([transformer.fit_transform(frame[cols], y) for _, transformer, cols in self.blocks])
        self._fitted(frame)
        return out

    def _fitted(self, frame: pd.DataFrame) -> "DenseBlocks":
        self.transformers_ = list(self.blocks)
        self.named_transformers_ = {name: transformer for name, transformer, _ in self.blocks}
        self.output_indices_, start = {}, 0
        first = frame.head(1)  # (a preprocessor's fold frame gathers only this row of each column)
        for name, transformer, cols in self.blocks:  # a block's width: its output for one row
            width = np.asarray(transformer.transform(first[cols])).shape[1]
            self.output_indices_[name] = slice(start, start + width)
            start += width
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        return np.hstack([transformer.transform(frame[cols]) for _, transformer, cols in self.transformers_])
