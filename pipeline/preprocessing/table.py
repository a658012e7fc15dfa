"""The per-fold tabular preprocessor: raw DataFrame → model inputs.

Fitted on the training rows of one fold; every statistic (means, quantiles, category vocabularies,
the "auto" choices) comes from those rows alone. Output is a dict of arrays keyed like the model's
inputs: ``"numeric"`` (float32, n × d: scaled numerics, missing indicators, one-hot and ordinal
codes) and ``"cat__<column>"`` (int32, n × 1) per embedded categorical, index 0 reserved for
categories unseen in the fold.

Target-aware encoders (``target``) need the fold's labels: ``fit(df, y)``. Their encoding of the
training rows themselves is cross-fitted (each row's from the other parts of the fold), kept from
``fit`` and given by ``transform(df, rows, fit_rows=True)``; everything else gets the encoding
fitted on all the fold's training rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from ..memory import release_memory
from .arrays import PackedColumns, aligned_empty
from .blocks import DenseBlocks
from .categorical import ENCODERS, MISSING, TARGET_AWARE, auto_min_count, embedding_dim
from .numeric import SCALERS, choose_auto

NUMERIC_INPUT = "numeric"
# Numeric columns per fitted block: the columns are scaled one by one, so the split changes no
# value or order; it bounds the fit's transient float copies to a group's (blocks.py).
COLUMN_GROUP = 16
EMBED_PREFIX = "cat__"
CHUNK_ROWS = 65536  # rows transformed at a time (memory of the intermediates, not speed)
FLAG_BLOCKS = ("missing", "onehot_")  # the blocks (named in fit) whose outputs are 0 or 1


@dataclass
class InputSpec:
    """What the model builder needs to know about the preprocessed inputs."""

    numeric_dim: int
    # (input name, vocabulary size including the reserved index 0, embedding width)
    embeddings: list[tuple[str, int, int]] = field(default_factory=list)
    image: tuple[int, int, int] | None = None  # (height, width, channels) of the image input, if any
    # Positions in the numeric block of the scaled numeric values themselves (not indicators,
    # one-hot or PLE columns): what a numeric embedding (model.mlp.numeric_embedding) encodes.
    continuous: list[int] = field(default_factory=list)

    @property
    def tabular(self) -> bool:
        return bool(self.numeric_dim or self.embeddings)


def _groups(cols: list, size: int) -> list[list]:
    return [cols[i:i + size] for i in range(0, len(cols), max(1, size))]


def _to_nan(x):
    """Infinite values are treated as missing. float32 columns (a Parquet file's) stay float32:
    their scalers' statistics are the same values, at half the memory of the fold's copies."""
    x = np.array(x, dtype=np.float32 if _all_float32(x) else np.float64)  # a copy, changed in place
    x[~np.isfinite(x)] = np.nan
    return x


def _all_float32(x) -> bool:
    dtypes = x.dtypes if isinstance(x, pd.DataFrame) else [getattr(x, "dtype", None)]
    return len(dtypes) > 0 and all(d == np.float32 for d in dtypes)


def _category_strings(col: pd.Series) -> pd.Series:
    """Categories as strings, missing as its own category; 3 and 3.0 are the same category
    (a column of ints in train.csv reads as floats in a test.csv with gaps). A pandas categorical
    (how a loaded table holds them) is mapped through its levels: one string per level, shared by
    every row, and the same strings as the plain column would give."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        levels = _category_strings(pd.Series(col.cat.categories)).tolist()
        table = np.array(levels + [MISSING], dtype=object)  # code -1 (missing) → the last entry
        codes = col.cat.codes.to_numpy()
        return pd.Series(table[np.where(codes >= 0, codes, len(levels))], index=col.index, dtype=object)
    values = col.astype(object)
    if pd.api.types.is_float_dtype(col):
        whole = col.notna() & (col % 1 == 0)
        values = values.where(~whole, col[whole].astype("int64").astype(object))
    return values.where(col.notna(), MISSING).astype(str).astype(object)


class _FoldFrame:
    """The rows a preprocessor is fitted on, as ``TabularPreprocessor._frame`` gives them, each
    column gathered when asked for: a fit uses one block of columns at a time, and the copy of
    every column of the fold's rows that it used to make first was the peak of a 1M-row fit."""

    def __init__(self, pre: "TabularPreprocessor", df: pd.DataFrame, rows: np.ndarray | None):
        self._pre, self._df, self._rows = pre, df, rows

    def __len__(self) -> int:
        return len(self._df) if self._rows is None else len(self._rows)

    def __getitem__(self, key):  # a name → a Series, a list of names → a DataFrame, as pandas does
        return self._pre._frame(self._df, self._rows, [key] if isinstance(key, str) else list(key))[key]

    def head(self, n: int) -> pd.DataFrame:
        rows = np.arange(min(n, len(self))) if self._rows is None else self._rows[:n]
        return self._pre._frame(self._df, rows)


class TabularPreprocessor:
    """scikit-learn-style: ``__init__`` stores, ``fit`` learns (attributes ending in ``_``)."""

    def __init__(self, columns: dict[str, dict], cfg, seed: int = 0, task: str | None = None):
        # columns: name → {"type": numeric|categorical, "scaler", "encoder", "order", "embedding_dim"}
        # task: what the labels given to fit are (target-aware encoders): regression, binary, multiclass.
        self.columns = columns
        self.cfg = cfg
        self.seed = seed
        self.task = task

    # ------------------------------------------------------------------ plan
    def _plan(self, df: pd.DataFrame) -> tuple[dict[str, str], dict[str, str], dict[str, int]]:
        """Resolve "auto" per column from this fold's training rows: scalers, encoders and the
        rare-level threshold of each categorical."""
        scalers, encoders, min_counts = {}, {}, {}
        for name, spec in self.columns.items():
            if spec["type"] == "numeric":
                choice = spec.get("scaler") or self.cfg.numeric
                if choice == "auto":
                    choice = choose_auto(_to_nan(df[name].to_numpy()), self.cfg.skew_threshold)
                scalers[name] = choice
            else:
                counts = df[name].value_counts(dropna=False).to_numpy()
                choice = spec.get("encoder") or self.cfg.categorical
                if choice == "auto":
                    choice = "onehot" if len(counts) <= self.cfg.onehot_max_levels else "embedding"
                    if self.cfg.target_levels is not None and len(counts) > self.cfg.target_levels:
                        choice = "target"
                    sparse = self.cfg.target_median_rows
                    if choice == "embedding" and sparse is not None and np.median(counts) < sparse:
                        choice = "target"
                encoders[name] = choice
                min_count = self.cfg.min_count
                if min_count == "auto":  # a declared order is kept whole: pooling levels would break it
                    min_count = 1 if spec.get("order") else auto_min_count(counts)
                min_counts[name] = int(min_count)
        return scalers, encoders, min_counts

    def _frame(self, df: pd.DataFrame, rows: np.ndarray | None = None, names: list | None = None) -> pd.DataFrame:
        """Numerics as float64 (float32 columns as float32), categoricals as strings with missing
        as its own category; ``rows``: only these positions, gathered one column at a time (the
        fold's rows are never copied out of the table whole); ``names``: only these columns."""
        index = df.index if rows is None else df.index[rows]
        out = {}
        for name in names if names is not None else self.columns:
            spec, col = self.columns[name], df[name]
            if rows is not None:
                # One index shared by every column: each gathered Series would carry its own copy
                # (an int64 per row per column: 610 MB of 800,000-row indexes for 100 columns).
                col = col.iloc[rows].set_axis(index)
            if spec["type"] == "numeric":
                col = pd.to_numeric(col)
                out[name] = col if col.dtype in (np.float32, np.float64) else col.astype("float64")
            else:
                out[name] = _category_strings(col)
        return pd.DataFrame(out, index=index, copy=False)

    # ------------------------------------------------------------------ fit / transform
    def _encoder(self, name: str, encoder: str):
        task = self.task
        if task == "multiclass" and self._label_count <= 2:  # scikit-learn's multiclass encoder needs 3+
            task = "binary"
        return ENCODERS.get(encoder)(self.cfg, self.columns[name].get("order"), self.min_counts_[name],
                                     task=task, seed=self.seed)

    def fit(self, df: pd.DataFrame, y=None, rows: np.ndarray | None = None) -> "TabularPreprocessor":
        """Fit on ``df`` (or its rows at positions ``rows``; ``y`` then holds those rows' labels)."""
        frame = _FoldFrame(self, df, rows)
        self.scalers_, self.encoders_, self.min_counts_ = self._plan(frame)
        self._label_count = len(np.unique(np.asarray(y))) if y is not None else 0
        aware = sorted(c for c, e in self.encoders_.items() if e in TARGET_AWARE)
        if aware and y is None:
            raise ValueError(f"TabularPreprocessor.fit: the target-aware encoding of {aware} needs the fold's labels (y)")
        n = len(frame)
        blocks = []
        numeric = list(self.scalers_)
        for scaler in sorted(set(self.scalers_.values())):
            cols = [c for c in numeric if self.scalers_[c] == scaler]
            # PLE stays one block: its hat columns follow all of its values.
            for k, part in enumerate(_groups(cols, len(cols) if scaler == "ple" else COLUMN_GROUP)):
                imputer = SimpleImputer(strategy=self.cfg.impute, fill_value=self.cfg.fill_value,
                                        keep_empty_features=True)
                pipe = make_pipeline(FunctionTransformer(_to_nan, feature_names_out="one-to-one"), imputer,
                                     SCALERS.get(scaler)(self.cfg, n, self.seed))
                blocks.append((f"num_{scaler}" + (f".{k}" if k else ""), pipe, part))
        if self.cfg.missing_indicator and numeric:
            for k, part in enumerate(_groups(numeric, COLUMN_GROUP)):
                blocks.append(("missing" + (f".{k}" if k else ""), make_pipeline(
                    FunctionTransformer(_to_nan, feature_names_out="one-to-one"),
                    MissingIndicator(features="missing-only", error_on_new=False)), part))
        for i, (name, enc) in enumerate(self.encoders_.items()):
            if enc != "embedding":
                blocks.append((f"{enc}_{i}", self._encoder(name, enc), [name]))
        self.dense_ = DenseBlocks(blocks) if blocks else None
        self._fit_rows = None  # the cross-fitted dense block of the fit rows (not saved: see __getstate__)
        if self.dense_ is not None and aware:
            # fit_transform is where TargetEncoder cross-fits; transform alone would leak each row's label.
            self._fit_rows = np.asarray(self.dense_.fit_transform(frame, np.asarray(y)), dtype=np.float32)
        elif self.dense_ is not None:
            self.dense_.fit(frame)
        self.numeric_dim_ = int(self.dense_.transform(frame.head(1)).shape[1]) if blocks else 0

        continuous = []
        if self.dense_ is not None:
            for block, part in self.dense_.output_indices_.items():
                if block.startswith("num_"):  # PLE appends its hat columns after the standardized values
                    width = len(self.dense_.named_transformers_[block].feature_names_in_)
                    continuous += list(range(part.start, part.start + width))
                elif block.startswith("target_"):  # a level's mean target: a number like any other
                    continuous += list(range(part.start, part.stop))
        self.embedders_ = {}
        embeddings = []
        for name, enc in self.encoders_.items():
            if enc == "embedding":
                encoder = self._encoder(name, "embedding")
                encoder.fit(frame[[name]])
                vocab = self._vocab_size(encoder)
                dim = self.columns[name].get("embedding_dim") or self.cfg.embedding_dim or embedding_dim(vocab)
                self.embedders_[name] = encoder
                embeddings.append((EMBED_PREFIX + name, vocab, int(dim)))
        self.input_spec_ = InputSpec(self.numeric_dim_, embeddings, continuous=continuous)
        release_memory()  # the fit's column copies, freed: not kept under the inputs built next
        return self

    @staticmethod
    def _vocab_size(encoder) -> int:
        # Known codes (frequent categories plus the shared rare code), plus index 0 for unseen.
        codes = len(encoder.categories_[0])
        infrequent = encoder.infrequent_categories_[0] if hasattr(encoder, "infrequent_categories_") else None
        if infrequent is not None:
            codes = codes - len(infrequent) + 1
        return codes + 1

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_fit_rows", None)  # training rows' encodings: needed during the fold only
        return state

    def transform(self, df: pd.DataFrame, rows: np.ndarray | None = None, *,
                  fit_rows: bool = False, packed: bool = False) -> dict[str, np.ndarray]:
        """Model inputs for ``df`` (or its rows at positions ``rows``), in blocks of CHUNK_ROWS:
        the float64 intermediates of the scalers stay the size of a block, and a fold's rows are
        never copied out of the table whole; only the float32 / int32 result is full size.

        ``fit_rows``: these are the rows ``fit`` saw, in its order; target-aware encodings then
        come cross-fitted, as ``fit`` computed them. ``packed``: the numeric block as
        ``PackedColumns`` (its missing indicators and one-hot columns as bits; arrays.py), for
        the fold's own training and prediction, whose datasets unpack it batch by batch."""
        if not hasattr(self, "input_spec_"):
            raise RuntimeError("TabularPreprocessor.transform called before fit")
        cross_fitted = getattr(self, "_fit_rows", None) if fit_rows else None
        n = len(df) if rows is None else len(rows)
        if cross_fitted is not None and len(cross_fitted) != n:
            raise ValueError(f"transform(fit_rows=True) got {n} rows; fit saw {len(cross_fitted)}")
        out = {}
        flags = self.flag_columns() if packed else []
        if self.numeric_dim_:
            out[NUMERIC_INPUT] = PackedColumns(n, self.numeric_dim_, flags) if flags else aligned_empty(
                (n, self.numeric_dim_), np.float32)
        for name in self.embedders_:
            out[EMBED_PREFIX + name] = aligned_empty((n, 1), np.int32)
        for start in range(0, n, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, n)
            part = df.iloc[start:stop] if rows is None else df.iloc[rows[start:stop]]
            # The fit rows' dense block is the cross-fitted one from fit: not transformed again.
            for key, block in self._transform_block(part, dense=cross_fitted is None).items():
                out[key][start:stop] = block
        if cross_fitted is not None:
            out[NUMERIC_INPUT][:] = cross_fitted
        if n > CHUNK_ROWS:
            release_memory()  # the blocks' temporaries, freed: not kept under the next step
        return out

    def flag_columns(self) -> list[int]:
        """Positions in the numeric block of the columns that hold only 0 and 1: the missing
        indicators and the one-hot encodings."""
        if self.dense_ is None:
            return []
        return [i for block, part in self.dense_.output_indices_.items() if block.startswith(FLAG_BLOCKS)
                for i in range(part.start, part.stop)]

    def _transform_block(self, df: pd.DataFrame, dense: bool = True) -> dict[str, np.ndarray]:
        frame = self._frame(df)
        out = {}
        if self.numeric_dim_ and dense:
            out[NUMERIC_INPUT] = np.asarray(self.dense_.transform(frame), dtype=np.float32)
        for name, encoder in self.embedders_.items():
            codes = encoder.transform(frame[[name]]).astype(np.int64) + 1  # -1 (unseen) → 0
            out[EMBED_PREFIX + name] = codes.astype(np.int32)
        return out

    def fit_transform(self, df: pd.DataFrame, y=None) -> dict[str, np.ndarray]:
        return self.fit(df, y).transform(df, fit_rows=True)

    def describe(self) -> dict:
        """What was chosen per column in this fold (for the log and the run folder)."""
        return {"numeric": dict(self.scalers_), "categorical": dict(self.encoders_),
                "min_count": dict(self.min_counts_),
                "numeric_dim": self.numeric_dim_,
                "embeddings": [list(e) for e in self.input_spec_.embeddings]}
