import numpy as np
import pandas as pd
import pytest

from pipeline.config import PreprocessingConfig
from pipeline.preprocessing import TabularPreprocessor, make_target_transformer
from pipeline.preprocessing.categorical import ENCODERS, embedding_dim
from pipeline.preprocessing.numeric import SCALERS, smooth_clip

rng = np.random.default_rng(0)


def frame(n=200, seed=0):
    r = np.random.default_rng(seed)
    return pd.DataFrame({
        "normal": r.normal(5, 2, n),
        "skewed": r.lognormal(0, 1.5, n),
        "color": r.choice(list("abc"), n),
        "city": r.choice([f"c{i}" for i in range(30)], n),
    })


NUM = {"normal": {"type": "numeric"}, "skewed": {"type": "numeric"}}
CAT = {"color": {"type": "categorical"}, "city": {"type": "categorical"}}


def fit(columns, df, y=None, task=None, **cfg):
    if y is None:  # labels for target-aware encoders: a noisy function of the rows
        y, task = np.random.default_rng(1).normal(size=len(df)), "regression"
    return TabularPreprocessor(columns, PreprocessingConfig(**cfg), task=task).fit(df, y)


@pytest.mark.parametrize("scaler", [s for s in SCALERS if s != "auto"])
def test_every_scaler_fits_and_transforms(scaler):
    df = frame()
    out = fit(NUM, df, numeric=scaler).transform(df)["numeric"]
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert out.shape == ((200, 2) if scaler != "ple" else (200, 2 + 2 * 8))  # 8 hat functions per column
    if scaler == "standardize":
        np.testing.assert_allclose(out.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(out.std(0), 1, atol=1e-4)
    if scaler == "minmax":
        assert out.min() == pytest.approx(0) and out.max() == pytest.approx(1)
    if scaler == "rankgauss":
        assert abs(pd.Series(out[:, 1]).skew()) < 0.2  # lognormal made Gaussian
    if scaler == "robust":
        assert np.abs(out).max() < 3  # smooth clipping bounds outliers
    if scaler == "none":
        np.testing.assert_allclose(out, df[["normal", "skewed"]].to_numpy(), rtol=1e-6)


def test_ple_is_piecewise_linear_at_training_quantiles():
    df = pd.DataFrame({"x": np.arange(101, dtype=float), "flag": np.r_[np.zeros(50), np.ones(51)]})
    pre = fit({"x": {"type": "numeric"}, "flag": {"type": "numeric"}}, df, numeric="ple", ple_knots=5)
    out = pre.transform(pd.DataFrame({"x": [0.0, 12.5, 25.0, 1000.0], "flag": [0.0, 1, 0, 1]}))["numeric"]
    # 2 standardized values, then 5 hat functions for x (knots 0, 25, 50, 75, 100); a 0/1 column
    # has 2 distinct quantiles, too few for splines, and keeps only its standardized value.
    assert out.shape == (4, 2 + 5)
    np.testing.assert_allclose(out[0, 2:], [1, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(out[1, 2:], [0.5, 0.5, 0, 0, 0], atol=1e-6)  # halfway between knots
    np.testing.assert_allclose(out[2, 2:], [0, 1, 0, 0, 0], atol=1e-6)
    assert np.isfinite(out[3]).all() and out[3, 2:].max() <= 1  # beyond the range: constant


def test_smooth_clip_is_near_identity_then_bounded():
    assert smooth_clip(np.array([0.1]))[0] == pytest.approx(0.1, rel=1e-3)
    assert smooth_clip(np.array([1e6]))[0] == pytest.approx(3, rel=1e-6)


def test_auto_picks_rankgauss_for_skewed_columns():
    pre = fit(NUM, frame(), numeric="auto")
    assert pre.scalers_ == {"normal": "standardize", "skewed": "rankgauss"}


def test_no_leakage_statistics_come_from_training_rows_only():
    """Changing the validation rows must not change what the fold learned."""
    df = frame(300)
    train, valid = df.iloc[:200], df.iloc[200:]
    outlier = valid.copy()
    outlier["normal"] = 1e6
    outlier["color"] = "zzz"
    a = fit({**NUM, **CAT}, train, numeric="standardize", categorical="onehot")
    # The scaler's statistics are exactly the training rows' ...
    scaler = a.dense_.named_transformers_["num_standardize"][-1]
    np.testing.assert_allclose(scaler.mean_, train[["normal", "skewed"]].mean().to_numpy())
    np.testing.assert_allclose(scaler.scale_, train[["normal", "skewed"]].std(ddof=0).to_numpy())
    # ... and transforming other rows (even extreme ones) learns nothing.
    before = a.transform(valid)["numeric"]
    a.transform(outlier)
    np.testing.assert_array_equal(a.transform(valid)["numeric"], before)
    assert a.transform(outlier)["numeric"][:, 2:5].sum() == 0  # "zzz" was never learned


@pytest.mark.parametrize("encoder", [e for e in ENCODERS if e != "auto"])
def test_unseen_categories_never_fail(encoder):
    df = frame()
    pre = fit(CAT, df, categorical=encoder)
    new = pd.DataFrame({"color": ["a", "never-seen", None], "city": ["c1", "c999", "c2"]})
    out = pre.transform(new)
    if encoder == "embedding":
        assert out["cat__color"][:, 0].tolist()[1:] == [0, 0]  # reserved index
        assert out["cat__color"][0, 0] > 0
    elif encoder == "onehot":
        assert out["numeric"][1, :3].sum() == 0  # unseen: all zeros
    else:
        assert np.isfinite(out["numeric"]).all()


def test_rare_categories_share_one_index():
    df = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 50 + ["r1", "r2", "r3"]})
    pre = fit({"c": {"type": "categorical"}}, df, categorical="embedding", min_count=5)
    codes = pre.transform(pd.DataFrame({"c": ["a", "b", "r1", "r2", "new"]}))["cat__c"][:, 0]
    assert codes[2] == codes[3] and len({codes[0], codes[1], codes[2]}) == 3 and codes[4] == 0
    assert pre.input_spec_.embeddings == [("cat__c", 4, embedding_dim(4))]  # a, b, rare + unseen


def test_auto_categorical_onehot_for_few_levels_embedding_above():
    pre = fit(CAT, frame(), categorical="auto", onehot_max_levels=10)
    assert pre.encoders_ == {"color": "onehot", "city": "embedding"}
    names = [e[0] for e in pre.input_spec_.embeddings]
    assert names == ["cat__city"] and pre.numeric_dim_ == 3


def test_embedding_dim_rule_and_override():
    assert [embedding_dim(n) for n in (2, 10, 100, 10**6)] == [2, 6, 21, 600]
    pre = fit({"city": {"type": "categorical", "embedding_dim": 7}}, frame(), categorical="embedding")
    assert pre.input_spec_.embeddings[0][2] == 7


def test_missing_and_infinite_values_are_imputed_with_indicator():
    df = pd.DataFrame({"x": [1.0, 2.0, np.nan, np.inf, 5.0, -np.inf], "y": [1.0, 2, 3, 4, 5, 6]})
    cols = {"x": {"type": "numeric"}, "y": {"type": "numeric"}}
    pre = fit(cols, df, numeric="none", impute="median", missing_indicator=True)
    out = pre.transform(df)["numeric"]
    np.testing.assert_allclose(out[:, 0], [1, 2, 2, 2, 5, 2])  # median of finite 1, 2, 5
    assert out.shape[1] == 3 and out[:, 2].tolist() == [0, 0, 1, 1, 0, 1]  # indicator only for x
    pre = fit(cols, df, numeric="none", impute="constant", fill_value=-1)
    assert pre.transform(df)["numeric"][2, 0] == -1


def test_ordinal_order_is_respected():
    df = pd.DataFrame({"cut": ["Fair", "Good", "Ideal", "Good"]})
    pre = fit({"cut": {"type": "categorical", "order": ["Fair", "Good", "Ideal"]}}, df, categorical="ordinal")
    out = pre.transform(df)["numeric"][:, 0]
    assert out[0] < out[1] < out[2] and out[1] == out[3]


def test_transform_before_fit_fails():
    with pytest.raises(RuntimeError, match="before fit"):
        TabularPreprocessor(NUM, PreprocessingConfig()).transform(frame())


@pytest.mark.parametrize("log1p, standardize", [(False, False), (True, False), (False, True), (True, True)])
def test_target_transform_round_trips(log1p, standardize):
    y = rng.lognormal(6, 1, (100, 1))
    t = make_target_transformer(log1p, standardize).fit(y)
    z = t.transform(y)
    if standardize:
        assert abs(z.mean()) < 1e-9 and z.std() == pytest.approx(1)
    np.testing.assert_allclose(t.inverse_transform(z), y, rtol=1e-9)


def test_integer_categories_match_across_int_and_float_columns():
    train = pd.DataFrame({"grade": [1, 2, 3, 1, 2, 3]})
    test = pd.DataFrame({"grade": [1.0, 3.0, np.nan]})  # gaps make pandas read floats
    pre = fit({"grade": {"type": "categorical"}}, train, categorical="embedding")
    codes = pre.transform(test)["cat__grade"][:, 0]
    assert codes[0] == pre.transform(train)["cat__grade"][0, 0] and codes[1] > 0 and codes[2] == 0


def test_loaded_tables_are_narrowed_and_read_the_same_way():
    """Pandas categoricals (issue: a million rows on one machine) give the same model inputs as the
    text columns they came from; numeric columns keep their type."""
    from pipeline.config import PreprocessingConfig
    from pipeline.data.load import narrow_dtypes
    from pipeline.preprocessing import TabularPreprocessor
    from pipeline.preprocessing import table

    wide = pd.DataFrame({"x": [1.5, np.nan, 3.25, 1e39 / 1e39, 7.0, 2.0] * 50,
                         "big": [1e300, 1.0, 2.0, 3.0, np.nan, 5.0] * 50,
                         "c": [3.0, 3.0, np.nan, 4.0, 5.0, 3.0] * 50,
                         "s": ["a", None, "b", "a", "c", "a"] * 50})
    columns = {"x": {"type": "numeric"}, "big": {"type": "numeric"}, "c": {"type": "categorical"},
               "s": {"type": "categorical"}}
    narrow = wide.copy()
    counts = narrow_dtypes([narrow], columns)
    assert narrow["x"].dtype == np.float64 and narrow["big"].dtype == np.float64
    assert isinstance(narrow["c"].dtype, pd.CategoricalDtype) and counts == 2
    # A column missing in every row of a frame has no levels at all.
    empty = pd.Series([np.nan, np.nan]).astype("category")
    assert list(table._category_strings(empty)) == list(table._category_strings(pd.Series([np.nan, np.nan])))
    assert list(table._category_strings(narrow["c"])) == list(table._category_strings(wide["c"]))
    assert list(table._category_strings(narrow["s"])) == list(table._category_strings(wide["s"]))
    cfg = PreprocessingConfig(categorical="embedding", numeric="standardize")
    a = TabularPreprocessor(columns, cfg).fit(wide).transform(wide)
    b = TabularPreprocessor(columns, cfg).fit(narrow).transform(wide)
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_transform_in_blocks_equals_one_block(monkeypatch):
    from pipeline.config import PreprocessingConfig
    from pipeline.preprocessing import TabularPreprocessor
    from pipeline.preprocessing import table

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=500), "s": rng.choice(list("abcdefgh"), 500)})
    columns = {"x": {"type": "numeric"}, "s": {"type": "categorical"}}
    pre = TabularPreprocessor(columns, PreprocessingConfig(categorical="embedding")).fit(df)
    rows = rng.permutation(500)[:300]
    whole = pre.transform(df, rows)
    monkeypatch.setattr(table, "CHUNK_ROWS", 7)
    parts = pre.transform(df, rows)
    same = pre.transform(df.iloc[rows])
    for key in whole:
        assert np.array_equal(whole[key], parts[key]) and np.array_equal(whole[key], same[key])


@pytest.mark.parametrize("scaler", ["standardize", "rankgauss", "robust", "ple"])
def test_fit_on_row_positions_in_float32_matches_a_float64_copy(scaler):
    """A fold fits on its row positions of the table (no copy of the rows) and keeps a Parquet
    file's float32 columns float32: the same inputs as fitting a float64 copy of those rows."""
    df = frame(400)
    df.loc[::17, "normal"] = np.nan
    df.loc[5, "skewed"] = np.inf
    rows = np.sort(np.random.default_rng(2).choice(400, 300, replace=False))
    columns = {**NUM, **CAT}
    cfg = PreprocessingConfig(numeric=scaler)
    wide = TabularPreprocessor(columns, cfg).fit(df.iloc[rows]).transform(df)
    narrow32 = df.astype({"normal": "float32", "skewed": "float32"})
    narrow = TabularPreprocessor(columns, cfg).fit(narrow32, rows=rows)
    assert narrow.scalers_ == TabularPreprocessor(columns, cfg).fit(df.iloc[rows]).scalers_
    got = narrow.transform(narrow32)
    assert got.keys() == wide.keys()
    for key in got:
        np.testing.assert_allclose(got[key], wide[key], rtol=1e-4, atol=1e-4, err_msg=key)


def test_the_float32_path_copies_and_keeps_its_dtype():
    from pipeline.preprocessing.table import _to_nan

    x = np.array([[1.0, np.inf], [np.nan, 2.0]], dtype=np.float32)
    out = _to_nan(x)
    assert out.dtype == np.float32 and np.isnan(out[0, 1]) and np.isinf(x[0, 1])  # the input is untouched
    assert _to_nan(pd.DataFrame({"a": [1.0], "b": np.array([2.0], np.float32)})).dtype == np.float64


def test_dense_blocks_give_what_a_column_transformer_gives_and_groups_change_nothing(monkeypatch):
    """The fold's dense block is fitted block by block without computing its output (blocks.py);
    it must equal scikit-learn's ColumnTransformer on the same blocks, and splitting the numeric
    columns into groups must change no value and no column's place."""
    import copy

    from sklearn.compose import ColumnTransformer

    import pipeline.preprocessing.table as table

    r = np.random.default_rng(3)
    df = pd.DataFrame({f"x{i}": r.lognormal(0, 1 + i % 3, 300) for i in range(7)})
    df["color"] = r.choice(list("abcd"), 300)
    df.loc[::9, "x1"] = np.nan
    df.loc[::13, "x4"] = np.nan
    columns = {**{f"x{i}": {"type": "numeric"} for i in range(7)}, "color": {"type": "categorical"}}
    y = r.normal(size=300)
    for cfg in (PreprocessingConfig(), PreprocessingConfig(numeric="rankgauss"),
                PreprocessingConfig(categorical="target")):
        pre = TabularPreprocessor(columns, cfg, task="regression").fit(df, y)
        reference = ColumnTransformer(copy.deepcopy(pre.dense_.blocks), sparse_threshold=0.0).fit(
            pre._frame(df), y)
        np.testing.assert_array_equal(pre.transform(df)["numeric"],
                                      np.asarray(reference.transform(pre._frame(df)), dtype=np.float32))
        assert pre.dense_.output_indices_ == {k: v for k, v in reference.output_indices_.items() if k != "remainder"}
        monkeypatch.setattr(table, "COLUMN_GROUP", 2)
        grouped = TabularPreprocessor(columns, cfg, task="regression").fit(df, y)
        monkeypatch.undo()
        assert len(grouped.dense_.blocks) > len(pre.dense_.blocks)
        np.testing.assert_array_equal(grouped.transform(df)["numeric"], pre.transform(df)["numeric"])
        assert grouped.input_spec_.continuous == pre.input_spec_.continuous


def test_packed_inputs_hold_the_flag_columns_as_bits_and_read_as_the_plain_block(monkeypatch):
    """The fold's packed numeric block (missing indicators and one-hot columns as bits) reads as
    the same float32 block, whole, by rows, by rows and columns, and in blocks of rows."""
    from pipeline.models.sklearn_models import to_matrix
    from pipeline.preprocessing import table
    from pipeline.preprocessing.arrays import PackedColumns

    df = frame(300)
    df.loc[::7, "normal"] = np.nan
    df.loc[::11, "skewed"] = np.nan
    pre = fit({**NUM, **CAT}, df, missing_indicator=True, categorical="auto", onehot_max_levels=3,
              numeric="standardize")
    rows = np.random.default_rng(0).permutation(300)[:200]
    plain = pre.transform(df, rows)
    monkeypatch.setattr(table, "CHUNK_ROWS", 64)
    packed = pre.transform(df, rows, packed=True)
    block = packed["numeric"]
    assert isinstance(block, PackedColumns) and block.flags.dtype == np.uint8
    # two indicators, color's three one-hot columns (city is an embedding: 30 levels): 5 bits, a byte
    assert block.shape == plain["numeric"].shape and block.flags.shape == (200, 1) and len(block) == 200
    np.testing.assert_array_equal(np.unpackbits(block.flags, axis=1, count=5),
                                  plain["numeric"][:, sorted(pre.flag_columns())])
    assert block.nbytes < plain["numeric"].nbytes
    assert sorted(pre.flag_columns()) == sorted(block.flag_cols.tolist())
    np.testing.assert_array_equal(np.asarray(block), plain["numeric"])
    idx = np.array([5, 0, 199, 5])
    np.testing.assert_array_equal(block[idx], plain["numeric"][idx])
    np.testing.assert_array_equal(block[10:20, 1:4], plain["numeric"][10:20, 1:4])
    np.testing.assert_array_equal(block[3], plain["numeric"][3])
    np.testing.assert_array_equal(to_matrix(packed)[0], to_matrix(plain)[0])
    order = np.random.default_rng(0).permutation(200)  # LightGBM's rows, fit rows first, as float32
    np.testing.assert_array_equal(to_matrix(packed, rows=order, dtype=np.float32)[0], to_matrix(plain)[0][order])
    np.testing.assert_array_equal(packed["cat__city"], plain["cat__city"])


def test_a_packed_flag_column_holding_another_value_is_an_error():
    from pipeline.preprocessing.arrays import PackedColumns

    block = PackedColumns(4, 3, [2])
    block[0:2] = np.array([[0.5, 1.0, 1.0], [2.0, 3.0, 0.0]])
    np.testing.assert_array_equal(block[0:2], [[0.5, 1.0, 1.0], [2.0, 3.0, 0.0]])
    assert block.flags.shape == (4, 1) and block.flags[0, 0] == 0b10000000  # the first flag: the high bit
    with pytest.raises(ValueError, match="other than 0 and 1"):
        block[2:4] = np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 1.0]])
