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
