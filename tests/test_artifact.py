"""Fold files are data, never code: skops with an explicit trusted list, Keras in safe mode, and no
pickle ever loaded from a run folder (a crafted one is refused before it can run anything)."""
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from conftest import FAST, cut
from pipeline.errors import DataError
from pipeline.training.artifact import TRUSTED_TYPES, FoldArtifact


def _fitted_bundles():
    """Every registered scaler and encoder, the target transforms and the scikit-learn members,
    fitted on real rows, as a fold would save them."""
    from pipeline.config import PreprocessingConfig
    from pipeline.models.sklearn_models import build_sklearn, to_matrix
    from pipeline.preprocessing import TabularPreprocessor, make_target_transformer
    from pipeline.preprocessing.categorical import ENCODERS
    from pipeline.preprocessing.numeric import SCALERS

    train = cut("diamonds", 200, 10)["train"]
    columns = {c: {"type": "numeric"} for c in ("carat", "depth", "table", "x")}
    columns.update({c: {"type": "categorical"} for c in ("cut", "color", "clarity")})
    for scaler in SCALERS.names():
        for encoder in ENCODERS.names():
            cfg = PreprocessingConfig(numeric=scaler, categorical=encoder, missing_indicator=True)
            pre = TabularPreprocessor(columns, cfg, task="regression").fit(train, train["price"].to_numpy())
            yield f"{scaler}/{encoder}", {"preprocessor": pre, "target": make_target_transformer(True, True).fit(
                train[["price"]].to_numpy()), "task": "regression", "classes": [], "features": list(columns)}
    pre = TabularPreprocessor(columns, PreprocessingConfig(categorical="embedding")).fit(train)
    x, cats = to_matrix(pre.transform(train))
    vocab = {c: 10 for c in cats}
    for name in ("hgb", "linear"):
        for task, y in (("regression", train["price"].to_numpy()), ("binary", (train["price"] > train["price"].median()).to_numpy())):
            yield f"{name}/{task}", build_sklearn(name, task, {}, cats, vocab, 0).fit(x, y)


def test_trusted_types_cover_everything_a_fold_saves(tmp_path):
    for label, obj in _fitted_bundles():
        untrusted = set(sio.get_untrusted_types(data=sio.dumps(obj))) - set(TRUSTED_TYPES)
        assert not untrusted, f"{label}: add to TRUSTED_TYPES only after checking them: {sorted(untrusted)}"


class _Marker:
    """A pickle that, when loaded, creates a file: what a crafted "pretrained folds" dataset does."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.slow
def test_a_crafted_run_folder_never_runs_code(tiny_comp, tmp_path, capsys):
    import run as cli
    from pipeline import load_run, run_competition
    from pipeline import export_run

    cfg = tiny_comp("health_insurance", train_rows=200, test_rows=40)
    out = tmp_path / "out"
    result = run_competition(cfg, FAST, output_dir=out, run_name="r")
    fold = result.run_dir / "folds" / "fold_0"
    marker = tmp_path / "owned"
    rows = pd.read_csv(cfg.parent / "data" / "test.csv.gz")

    # 1. The old format: a pickle in place of the skops file. run.json's record of the files
    # catches the swap first; a crafted folder would rewrite run.json too, so without that record
    # the fold loader itself must refuse.
    shutil.move(fold / "preprocessing.skops", tmp_path / "kept.skops")
    (fold / "preprocessing.joblib").write_bytes(pickle.dumps({"preprocessor": _Marker(marker)}))
    with pytest.raises(DataError, match=r"preprocessing.skops is missing"):
        load_run(result.run_dir)
    info_path = result.run_dir / "run.json"
    info_path.write_text(json.dumps({k: v for k, v in json.loads(info_path.read_text()).items() if k != "files"}))
    with pytest.raises(DataError, match=r"a fold saved with pickle .* never loaded"):
        load_run(result.run_dir).predict(rows)
    with pytest.raises(DataError, match=r"a fold saved with pickle"):
        export_run(cfg, "r", ["float32"], output_dir=out)
    assert cli.main(["--comp", str(cfg), "--output-dir", str(out), "--predict", "r", "--input",
                     str(cfg.parent / "data" / "test.csv.gz")]) == 2
    assert capsys.readouterr().err.count("error: ") == 1
    assert not marker.exists()

    # 2. A skops file naming a function this pipeline never writes.
    (fold / "preprocessing.joblib").unlink()
    sio.dump({"preprocessor": os.system, "target": None, "task": "binary", "classes": [0, 1], "features": []},
             fold / "preprocessing.skops")
    with pytest.raises(DataError, match=r"holds types this pipeline never writes \(.*system"):
        load_run(result.run_dir).predict(rows)
    with pytest.raises(DataError, match=r"holds types this pipeline never writes"):
        export_run(cfg, "r", ["float32"], output_dir=out)

    # 3. A damaged file is one clear error too; the real one still works.
    (fold / "preprocessing.skops").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"cannot be read as a fold file"):
        FoldArtifact.load(fold)
    shutil.move(tmp_path / "kept.skops", fold / "preprocessing.skops")
    preds = load_run(result.run_dir).predict(rows)
    assert np.isfinite(preds["whi"]).all() and not marker.exists()


@pytest.mark.parametrize("temperatures", [{"best": {"inverse_temperature": "1.0", "mix": 0.01}},
                                          {"best": {"inverse_temperature": float("nan"), "mix": 0.01}},
                                          {"best": {"mix": 0.01}}, {"other": {"inverse_temperature": 1.0, "mix": 0.0}},
                                          ["best"]])
def test_a_members_damaged_temperatures_are_one_error(tmp_path, temperatures):
    """A Keras member's temperatures (train.calibration ts-mix) are read back only as one pair of
    non-negative numbers per network of the member."""
    from pipeline.training.artifact import dump_trusted
    from pipeline.training.members import MEMBER_FILE, FoldModel

    state = {"kind": "keras", "name": "realmlp", "task": "binary", "target": None, "clip": None, "image": None,
             "networks": ["best"]}
    (tmp_path / "model_best.keras").write_bytes(b"")
    dump_trusted({**state, "temperatures": temperatures}, tmp_path / MEMBER_FILE)
    with pytest.raises(DataError, match=r"its temperatures are not one pair of non-negative numbers"):
        FoldModel.load(tmp_path)
    dump_trusted({**state, "temperatures": {"best": {"inverse_temperature": 0.8, "mix": 0.001}}}, tmp_path / MEMBER_FILE)
    assert FoldModel.load(tmp_path).temperatures["best"]["inverse_temperature"] == 0.8


@pytest.mark.parametrize("rows", [0, -4096, "4096", 4096.0, None])
def test_a_members_damaged_rows_per_call_is_one_error(tmp_path, rows):
    """The rows per forward call a Keras member saved (its fit's train.predict_batch_size, so that
    --predict chunks the rows as the fit did) are read back only as a positive whole number; a
    member saved before it predicts with the default."""
    from pipeline.training.artifact import dump_trusted
    from pipeline.training.members import MEMBER_FILE, FoldModel, default_rows_per_call

    state = {"kind": "keras", "name": "realmlp", "task": "binary", "target": None, "clip": None, "image": None,
             "networks": ["best"], "temperatures": {}}
    (tmp_path / "model_best.keras").write_bytes(b"")
    dump_trusted({**state, "rows_per_call": rows}, tmp_path / MEMBER_FILE)
    with pytest.raises(DataError, match=r"its rows_per_call is .*, not a positive whole number"):
        FoldModel.load(tmp_path)
    dump_trusted({**state, "rows_per_call": 512}, tmp_path / MEMBER_FILE)
    assert FoldModel.load(tmp_path).rows_per_call == 512
    dump_trusted(state, tmp_path / MEMBER_FILE)
    assert FoldModel.load(tmp_path).rows_per_call == default_rows_per_call() == 4096


@pytest.mark.slow
def test_new_rows_get_the_declared_missing_values_as_the_runs_tables_did(tiny_comp, tmp_path, monkeypatch):
    """diamonds declares x, y, z of 0 missing: --predict and load_run read a raw 0 there as missing,
    as the run read its test table, so every member (the trees most) predicts those rows as the
    run did. A fold saved before its bundle kept them takes them from its run's config."""
    from pipeline import run_competition
    from pipeline.runs import Run
    from pipeline.training.artifact import PREPROCESSING_FILE, load_trusted

    frames = cut("diamonds", 300, 120)
    frames["train"].loc[frames["train"].index[:15], ["x", "y", "z"]] = 0
    frames["test"].loc[frames["test"].index[:20], ["x", "y", "z"]] = 0
    cfg = tiny_comp("diamonds", frames)
    result = run_competition(cfg, FAST + ["model.members=[mlp, hgb, lightgbm]"], output_dir=tmp_path)
    fold = result.run_dir / "folds" / "fold_0"
    assert load_trusted(fold / PREPROCESSING_FILE)["missing_values"] == {"x": [0], "y": [0], "z": [0]}
    test = pd.read_csv(cfg.parent / "data" / "test.csv.gz")
    saved = pd.read_csv(result.run_dir / "test_pred.csv")["price"].to_numpy()
    np.testing.assert_allclose(Run.open(result.run_dir).predict(test)["price"].to_numpy(), saved, rtol=1e-5)
    load = FoldArtifact.load

    def as_saved_before(fold_dir):  # a bundle without missing_values, as older runs saved it
        artifact = load(fold_dir)
        artifact.missing_values = {}
        return artifact

    monkeypatch.setattr(FoldArtifact, "load", staticmethod(as_saved_before))
    assert Run.open(result.run_dir).artifact("fold_0").missing_values == {"x": [0], "y": [0], "z": [0]}
