"""Every bad input the loader must refuse, with the message that names the file, column and fix."""
import numpy as np
import pytest

from conftest import cut
from pipeline.config_files import load_config
from pipeline.data import load_competition
from pipeline.errors import ConfigError, DataError


def load(path, overrides=()):
    return load_competition(load_config(path, list(overrides)))


def test_loads_and_resolves_the_embedded_competitions():
    d = load("diamonds")
    assert d.task == "regression" and d.cfg.metric == "rmse" and d.cfg.cv.scheme == "kfold"
    assert d.columns["cut"] == {"type": "categorical"} and d.columns["x"]["type"] == "numeric"
    assert d.train["x"].isna().sum() > 0  # declared missing_values: [0]
    h = load("health_insurance")
    assert h.task == "binary" and h.classes == ["no", "yes"] and set(np.unique(h.y)) == {0, 1}
    assert h.cfg.features.columns["whrswk"].type == "numeric"  # resolved types are written back


def test_task_metric_and_scheme_inferred(tiny_comp):
    path = tiny_comp("health_insurance")
    cfg_text = path.read_text().replace("task: binary\n", "").replace("metric: auc\n", "")
    cfg_text = cfg_text.replace("  scheme: stratified\n", "").replace('  positive_label: "yes"\n', "")
    path.write_text(cfg_text)
    d = load(path)
    assert (d.task, d.cfg.metric, d.cfg.cv.scheme, d.classes[-1]) == ("binary", "auc", "stratified", "yes")


def edit(tiny_comp, name="diamonds", **changes):
    frames = cut(name)
    for key, fn in changes.items():
        frames[key] = fn(frames[key].copy())
    return tiny_comp(name, frames)


def test_missing_file(tiny_comp):
    path = tiny_comp()
    (path.parent / "data" / "test.csv.gz").unlink()
    with pytest.raises(DataError, match=r"test.csv.gz: file not found \(config field data.test\)"):
        load(path)


def test_unreadable_csv(tiny_comp):
    path = tiny_comp()
    (path.parent / "data" / "train.csv.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match=r"train.csv.gz: cannot be read as CSV"):
        load(path)


@pytest.mark.parametrize("override, message", [
    ("data.id=ident", r"train.csv.gz: no column 'ident' \(data.id\)"),
    ("data.target=prise", r"train.csv.gz: no column 'prise' \(data.target\). Did you mean: price"),
    ("features.drop=[colour]", r"no column 'colour' \(features: colour\). Did you mean: color"),
    ("cv.group=shop", r"no column 'shop' \(cv.group\)"),
])
def test_unknown_columns(tiny_comp, override, message):
    with pytest.raises(DataError, match=message):
        load(tiny_comp(), [override])


def test_target_missing_values(tiny_comp):
    path = edit(tiny_comp, train=lambda df: df.assign(price=df.price.where(df.index != 3)))
    with pytest.raises(DataError, match=r"target 'price' is missing in 1 rows .* Drop or fill those rows"):
        load(path)


def test_target_with_one_class(tiny_comp):
    path = edit(tiny_comp, "health_insurance", train=lambda df: df.assign(whi="yes"))
    with pytest.raises(DataError, match=r"target 'whi' has a single value \('yes'\)"):
        load(path)


def test_test_lacks_a_training_feature(tiny_comp):
    path = edit(tiny_comp, test=lambda df: df.drop(columns=["depth"]))
    with pytest.raises(DataError, match=r"test.csv.gz: lacks training feature\(s\) \['depth'\]"):
        load(path)


def test_non_numeric_value_in_numeric_column(tiny_comp):
    def odd(df):
        df["carat"] = df["carat"].astype(object)
        df.loc[5, "carat"] = "n/a?"
        return df
    # Numeric in train, one odd value in test: read as missing (issue 14's token rule), with a warning.
    data = load(edit(tiny_comp, test=odd))
    assert np.isnan(data.test["carat"].iloc[5]) and data.notes["tokens"]["carat"]["tokens"] == ["n/a?"]

    def bad(df):
        df["carat"] = df["carat"].astype(object)
        df.loc[5:40, "carat"] = "n/a?"
        return df
    path = edit(tiny_comp, test=bad)  # many: an error naming the first
    with pytest.raises(DataError, match=r"test.csv.gz: column 'carat' is numeric but row 7 holds 'n/a\?'"):
        load(path)
    with pytest.raises(DataError, match=r"train.csv.gz: column 'cut' is numeric but row 2 holds 'Ideal'"):
        load(tiny_comp(), ["features.columns.cut.type=numeric"])


def test_all_missing_column(tiny_comp):
    path = edit(tiny_comp, train=lambda df: df.assign(table=np.nan))
    with pytest.raises(DataError, match=r"column 'table' is missing in every row. Drop it with features.drop"):
        load(path)


def test_sample_submission_ids_must_match_test(tiny_comp):
    path = edit(tiny_comp, sample_submission=lambda df: df.assign(id=df.id + 10**7))
    with pytest.raises(DataError, match=r"sample_submission.csv.gz: ids do not match test.csv.gz: 120 not in test"):
        load(path)


def test_duplicate_ids(tiny_comp):
    path = edit(tiny_comp, train=lambda df: df.assign(id=0))
    with pytest.raises(DataError, match=r"train.csv.gz: 299 duplicated id\(s\) in 'id' \(first: '0' at row 3\)"):
        load(path)


def test_order_must_cover_training_values(tiny_comp):
    with pytest.raises(DataError, match=r"column 'cut' has values \['Ideal', 'Premium'\] not in features.columns.cut.order"):
        load(tiny_comp(), ["features.columns.cut.order=[Fair, Good, Very Good]"])


def test_unknown_preprocessor_for_a_column(tiny_comp):
    with pytest.raises(ConfigError, match=r"features.columns.carat.scaler: unknown numeric preprocessor 'log'"):
        load(tiny_comp(), ["features.columns.carat.scaler=log"])


def test_binary_with_three_classes(tiny_comp):
    path = edit(tiny_comp, "health_insurance",
                train=lambda df: df.assign(whi=np.where(df.index % 3 == 0, "maybe", df.whi)))
    with pytest.raises(DataError, match=r"task binary needs 2 target values, 'whi' has 3"):
        load(path)


def test_metric_must_fit_task(tiny_comp):
    with pytest.raises(ConfigError, match=r"metric: 'accuracy' does not apply to a regression task"):
        load(tiny_comp(), ["metric=accuracy"])


def _parquet_frame():
    import pandas as pd

    r = np.random.default_rng(0)
    df = pd.DataFrame({f"x{j}": r.normal(size=40).astype(np.float32) for j in range(9)})
    df.loc[::5, "x3"] = np.nan
    df["id"] = np.arange(40)
    df["n"] = r.integers(0, 9, 40)
    df["city"] = pd.Series(r.choice(["a", "b ", None], 40), dtype=object)
    df["shape"] = pd.Categorical(r.choice(["round", "flat"], 40))
    df["flag"] = r.random(40) > 0.5
    return df.set_index(pd.Index(np.repeat(np.arange(20), 2), name="row"))  # a stored index, repeated values


def test_a_parquet_file_is_read_in_column_groups_as_pandas_reads_it_whole(tmp_path, monkeypatch):
    """read.py reads a Parquet file a few columns at a time (its Arrow columns live beside their
    pandas copies for one group only): the frame is the one a whole read gives, with its stored
    index, column order, types, missing values and categoricals turned to text."""
    import pandas as pd
    import pyarrow as pa

    from pipeline.data import read

    plain = tmp_path / "range.parquet"  # pandas' default index, stored as metadata, not as a column
    _parquet_frame().reset_index(drop=True).to_parquet(plain)
    first = read.read_table(plain, "data.train", ("id",))
    assert first.index.equals(pd.RangeIndex(40)) and first.shape == (40, 14)
    path = tmp_path / "train.parquet"
    _parquet_frame().to_parquet(path)
    pool = pa.default_memory_pool()
    with read.lean_memory():
        grouped = read.read_table(path, "data.train", ("id",))
        assert pa.default_memory_pool().backend_name == "system"
    assert pa.default_memory_pool().backend_name == pool.backend_name  # the caller's pool is back
    monkeypatch.setattr(read, "_PARQUET_GROUP", 1000)
    whole = read.read_table(path, "data.train", ("id",))
    assert list(grouped.columns) == list(_parquet_frame().columns) and grouped.index.name == "row"
    pd.testing.assert_frame_equal(grouped, whole)
    assert grouped["city"].isna().sum() == whole["city"].isna().sum() > 0
    assert set(grouped["shape"].dropna()) == {"round", "flat"}


def test_a_parquet_file_with_a_repeated_column_name_or_damaged_is_one_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.data.read import read_table

    path = tmp_path / "train.parquet"
    columns = [pa.array(np.arange(3.0)) for _ in range(12)]
    pq.write_table(pa.Table.from_arrays(columns, names=[f"c{j}" for j in range(11)] + ["c4"]), path)
    with pytest.raises(DataError, match=r"train.parquet: column name\(s\) \['c4'\] appear more than once"):
        read_table(path, "data.train")
    path.write_bytes(b"PAR1" + b"\0" * 64)
    with pytest.raises(DataError, match=r"train.parquet: cannot be read as Parquet"):
        read_table(path, "data.train")


def test_releasing_memory_between_steps_keeps_every_array():
    from pipeline.memory import release_memory

    kept = np.arange(1_000_000, dtype=np.float64)
    freed = [np.ones(50_000) for _ in range(100)]
    del freed
    release_memory()
    assert kept.sum() == 999_999 * 1_000_000 / 2
