"""Reading a competition's files: CSV (or .csv.gz) and Parquet, with ids and image names kept as
text exactly as written, and one DataError naming the file when it cannot be read. Nothing here
checks the contents against the config (load.py) or guesses settings from them (infer.py)."""
from __future__ import annotations

import contextlib
import gzip
import inspect
import zlib
from pathlib import Path

import pandas as pd

from ..config import Config
from ..errors import DataError, first_line
from ..memory import release_memory


def data_dir(cfg: Config, override: str | Path | None = None) -> Path:
    if override is not None:
        return Path(override)
    d = Path(cfg.data.dir)
    return d if d.is_absolute() else cfg.root / d


def read_table(path: Path, field_name: str, text_columns: tuple = ()) -> pd.DataFrame:
    """A CSV (or .csv.gz) or a Parquet file, with ``text_columns`` kept as text; one DataError if
    it cannot be read."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (config field {field_name}). "
                        f"Put the file there, fix {field_name}, or pass --data-dir.")
    if path.suffix.lower() in (".parquet", ".pq"):
        df = _read_parquet(path, text_columns)
        names = [str(c) for c in df.columns]
    else:
        df, names = _read_csv(path, text_columns)
    _names_once(path, names)
    if df.empty:
        raise DataError(f"{path}: has no rows.")
    return df


def _names_once(path: Path, names: list) -> None:
    repeated = sorted({str(n) for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: column name(s) {repeated[:5]} appear more than once in the header. Rename them "
                        f"so each column has its own name.")


try:  # pandas' own list of the texts read_csv takes for missing (the list its docs show)
    from pandas._libs.parsers import STR_NA_VALUES as _NA_MARKERS
except ImportError:  # a pandas that moved it
    _NA_MARKERS = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
                   "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}


def _read_csv(path: Path, text_columns: tuple) -> tuple[pd.DataFrame, list]:
    try:
        # The header as written: pandas renames a repeated name ("a", "a.1") without a word.
        names = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
        # Ids and image names stay text as written: 00042 keeps its zeros, and an id "NA" or "null"
        # is an id (only an empty cell is missing); the other columns get pandas' missing markers.
        na = {c: [""] if c in text_columns else list(_NA_MARKERS) for c in names}
        df = pd.read_csv(path, dtype={c: str for c in text_columns} or None, keep_default_na=False, na_values=na)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError,
            zlib.error) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
            first = f"the compressed file is truncated or damaged: {first}"
        raise DataError(f"{path}: cannot be read as CSV ({first}). Check the file.") from None
    return df, names


# pyarrow's conversion column by column, each Arrow column freed once converted, no consolidated
# copy (its documented options for a large table): a 1M x 100 table read in 1.0 GB instead of 1.3 GB.
# pandas < 3 has no way to pass them; it reads as before.
_LEAN_PARQUET = ({"to_pandas_kwargs": {"split_blocks": True, "self_destruct": True}}
                 if "to_pandas_kwargs" in inspect.signature(pd.read_parquet).parameters else {})


@contextlib.contextmanager
def lean_memory():
    """Arrow's allocations made by the C library's malloc while the block runs, and what was freed
    handed back at its end. Arrow's own pool (mimalloc) keeps what a freed column leaves in its
    segments: a 1M x 100 Parquet table, loaded and its text columns made categories, held 640 MB
    above the start with Arrow's pool (its columns: 427 MB), 480 MB with malloc and a trim."""
    try:
        import pyarrow as pa
    except ImportError:  # CSV only, nothing of Arrow's to manage
        pa = None
    before = pa.default_memory_pool() if pa else None
    if pa:
        pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        if pa:
            pa.set_memory_pool(before)
        release_memory()


# Columns read this many at a time: the file's decoded Arrow columns then live beside their pandas
# copies for one group, not for the whole file (the train file of a 1M x 100 table: the read's
# peak 1,125 MB above the start whole, 671 MB by groups of 10 columns).
_PARQUET_GROUP = 8


def _read_parquet_columns(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    # A stored index column, which pandas adds to every group (a RangeIndex is stored as a dict).
    stored_index = {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
    names = [n for n in schema.names if n not in stored_index]
    _names_once(path, names)  # (Arrow cannot select a repeated name; its error would not say which)
    parts = []
    for columns in [names[i:i + _PARQUET_GROUP] for i in range(0, len(names), _PARQUET_GROUP)]:
        parts.append(pd.read_parquet(path, columns=columns, **_LEAN_PARQUET))
        release_memory()
    if len(parts) == 1:
        return parts[0]
    # Every group has the file's index; the columns are joined side by side, in the file's order.
    # (pandas < 3 copies unless told not to; pandas 3 never copies here and deprecates the word.)
    return pd.concat(parts, axis=1, **({"copy": False} if int(pd.__version__.split(".")[0]) < 3 else {}))


def _read_parquet(path: Path, text_columns: tuple) -> pd.DataFrame:
    """Parquet keeps its own column types; dictionary (categorical) columns come back as text
    values, as a CSV's would, so the column plans are the same for both formats."""
    try:
        import pyarrow  # noqa: F401  (pandas reads Parquet through it)
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow. Install it (pip install pyarrow) or give a CSV.") \
            from None
    try:
        df = _read_parquet_columns(path)
    except (OSError, ValueError) as exc:
        first = first_line(exc)
        raise DataError(f"{path}: cannot be read as Parquet ({first}). Check the file.") from None
    for col in df.columns:
        if isinstance(df[col].dtype, pd.CategoricalDtype):
            df[col] = df[col].astype(object).where(df[col].notna(), None)
    for col in text_columns:  # text, with a missing value kept missing (it is an error for an id)
        if col in df.columns:
            df[col] = df[col].astype(str).where(df[col].notna(), None)
    return df


def read_files(cfg: Config, base: Path) -> tuple[dict, tuple]:
    d = cfg.data
    paths = {"train": base / d.train, "test": base / d.test, "sample_submission": base / d.sample_submission}
    # Ids are text, exactly as written: 000300 keeps its zeros, and one blank id cannot turn the
    # others into floats (300.0). Image names likewise.
    text = tuple(c for c in (cfg.image.column,) if c) + (d.id,)
    train = read_table(paths["train"], "data.train", text)
    test = read_table(paths["test"], "data.test", text)
    sample = read_table(paths["sample_submission"], "data.sample_submission", (d.id,))
    solution = None
    if d.solution and (base / d.solution).is_file():
        paths["solution"] = base / d.solution
        solution = read_table(paths["solution"], "data.solution", (d.id,))
    return paths, (train, test, sample, solution)

