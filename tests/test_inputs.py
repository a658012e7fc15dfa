"""Hostile and messy input, one test per case that used to go wrong: names that escape the output
folder, labels with stray spaces, a rating target scored by RMSE, tokens in a numeric column,
duplicate headers, YAML booleans as labels, unclipped regression, a bad solution file found after
training, tracebacks instead of one error line, NaN in scores.json, 0600 files."""
import errno
import gzip
import json
import os
import stat

import numpy as np
import pandas as pd
import pytest
import yaml

import run as cli
from conftest import FAST, cut, write_competition
from pipeline.config_files import load_config
from pipeline.data import load_competition
from pipeline.errors import DataError


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def health(tmp_path, edit=None, config_edit=None):
    frames = cut("health_insurance", 200, 50)
    if edit:
        edit(frames)
    cfg = write_competition(tmp_path / "health_insurance", "health_insurance", frames)
    if config_edit:
        raw = yaml.safe_load(cfg.read_text())
        config_edit(raw)
        cfg.write_text(yaml.safe_dump(raw))
    return cfg


# ----------------------------------------------------------------------------- names as paths


@pytest.mark.parametrize("args, message", [
    (["--run-name", "../../x"], r"--run-name '../../x': a name must be one folder name"),
    (["--run-name", "/abs/path"], r"--run-name '/abs/path': a name must be one folder name"),
    (["--tune", "--study", "../x"], r"--study '../x': a name must be one folder name"),
    (["--export-run", "../../elsewhere"], r"--export-run ../../elsewhere: lies outside the output folder"),
    (["--predict", "/tmp", "--input", "x.csv"], r"--predict /tmp: lies outside the output folder"),
])
def test_names_never_escape_the_output_folder(args, message, tmp_path, capsys):
    import re

    out = tmp_path / "o"
    assert cli.main(["--smoke", "--output-dir", str(out)] + args) == 2
    assert re.search(message, one_error(capsys))
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob("**/abs"))


def test_a_config_name_with_a_path_is_refused(tmp_path, capsys):
    cfg = health(tmp_path, config_edit=lambda raw: raw.update(name="../escaped"))
    assert cli.main(["--comp", str(cfg), "--smoke", "--output-dir", str(tmp_path / "o")]) == 2
    assert "competition name '../escaped': a name must be one folder name" in one_error(capsys)
    assert not (tmp_path / "escaped").exists()


# ----------------------------------------------------------------------------- reading data


def test_labels_with_stray_spaces_are_one_label(tmp_path):
    def spaces(frames):
        frames["train"].loc[::3, "whi"] = " " + frames["train"].loc[::3, "whi"]
        frames["solution"].loc[::2, "whi"] = frames["solution"].loc[::2, "whi"] + "  "
    data = load_competition(load_config(health(tmp_path, spaces)))
    assert data.task == "binary" and data.classes == ["no", "yes"]
    assert data.notes["stripped"]["whi"] > 60
    pos, y = data.holdout()
    assert set(np.unique(y)) <= {0, 1}


def test_metric_decides_the_task_of_a_rating(tmp_path):
    frames = cut("diamonds", 200, 50)
    for f in ("train", "solution"):
        frames[f]["rating"] = (frames[f]["price"] % 5 + 1).astype(int)
        frames[f] = frames[f].drop(columns=["price"])
    frames["sample_submission"] = frames["sample_submission"].rename(columns={"price": "rating"})
    frames["test"] = frames["test"].drop(columns=["price"], errors="ignore")
    cfg = write_competition(tmp_path / "diamonds", "diamonds", frames)
    data = load_competition(load_config(cfg, ["data.target=rating", "metric=rmse", "task=null"]))
    assert data.task == "regression" and "metric rmse scores regression" in data.notes["task"]["why"]
    data = load_competition(load_config(cfg, ["data.target=rating", "metric=logloss", "task=null"]))
    assert data.task == "multiclass"


def test_a_few_tokens_in_a_numeric_column_are_missing_values(tmp_path):
    def tokens(frames):
        frames["train"]["whrswk"] = frames["train"]["whrswk"].astype(object)
        frames["train"].loc[[3], "whrswk"] = "?"
        frames["test"]["whrswk"] = frames["test"]["whrswk"].astype(object)
        frames["test"].loc[[5], "whrswk"] = "unknown"
    data = load_competition(load_config(health(tmp_path, tokens)))
    assert data.columns["whrswk"]["type"] == "numeric"
    assert np.isnan(data.train["whrswk"].iloc[3]) and np.isnan(data.test["whrswk"].iloc[5])
    assert data.notes["tokens"]["whrswk"]["tokens"] == ["?", "unknown"]
    # More tokens than the share allows: a text column, as before.
    data = load_competition(load_config(health(tmp_path / "b", tokens), ["features.numeric_tokens=0.001"]))
    assert data.columns["whrswk"]["type"] == "categorical"


def test_duplicate_column_names_are_an_error(tmp_path):
    cfg = health(tmp_path)
    train = tmp_path / "health_insurance" / "data" / "train.csv.gz"
    text = gzip.decompress(train.read_bytes()).decode()
    header, rest = text.split("\n", 1)
    train.write_bytes(gzip.compress((header.replace("hhi2", "hhi") + "\n" + rest).encode()))
    with pytest.raises(DataError, match=r"column name\(s\) \['hhi'\] appear more than once"):
        load_competition(load_config(cfg))


def test_yaml_boolean_as_a_label_says_to_quote_it(tmp_path):
    cfg = health(tmp_path)
    cfg.write_text(cfg.read_text().replace('positive_label: "yes"', "positive_label: Yes").replace(
        "positive_label: 'yes'", "positive_label: Yes"))
    assert yaml.safe_load(cfg.read_text())["data"]["positive_label"] is True
    with pytest.raises(DataError, match=r"positive_label was read as the YAML boolean true .* Quote the label"):
        load_competition(load_config(cfg))


def test_inferred_positive_label_is_reported(tmp_path):
    cfg = health(tmp_path, config_edit=lambda raw: raw["data"].pop("positive_label"))
    data = load_competition(load_config(cfg))
    assert data.classes[-1] == "yes" and "means positive" in data.notes["positive"]["why"]
    from pipeline.data.profile import profile

    p = profile(data)
    assert p["positive"] == {"label": "yes", "why": data.notes["positive"]["why"]}
    assert p["columns"]["whrswk"]["type"] == "numeric" and "levels" in p["columns"]["hhi"]


def test_bad_solution_file_fails_before_training(tmp_path):
    def bad(frames):
        frames["solution"].loc[frames["solution"].index[0], "whi"] = "maybe"
    with pytest.raises(DataError, match=r"labels \['maybe'\] are not classes"):
        load_competition(load_config(health(tmp_path, bad)))


@pytest.mark.parametrize("case, message", [
    ("truncated", r"train.csv.gz: cannot be read as CSV \(the compressed file is truncated"),
    ("inf_target", r"target 'price' is infinite in 1 row"),
    ("folds", r"cv.folds=500 is more than the 200 training rows"),
    ("not_utf8", r"config.yaml: is not UTF-8 text"),
    ("run_is_file", r"exists and is a file, not a run folder"),
])
def test_tracebacks_became_one_error_line(case, message, tmp_path, capsys):
    import re

    frames = cut("diamonds", 200, 50)
    if case == "inf_target":
        frames["train"]["price"] = frames["train"]["price"].astype(float)
        frames["train"].loc[7, "price"] = np.inf
    cfg = write_competition(tmp_path / "diamonds", "diamonds", frames)
    args = ["--comp", str(cfg), "--output-dir", str(tmp_path / "o"), "--smoke"]
    if case == "truncated":
        path = cfg.parent / "data" / "train.csv.gz"
        path.write_bytes(path.read_bytes()[:-200])
    elif case == "folds":
        args = [a for a in args if a != "--smoke"] + ["--set", "cv.folds=500"]
    elif case == "not_utf8":
        cfg.write_bytes(cfg.read_bytes() + "# caf\xe9\n".encode("latin-1"))
    elif case == "run_is_file":
        (tmp_path / "o" / "diamonds").mkdir(parents=True)
        (tmp_path / "o" / "diamonds" / "r").write_text("")
        args += ["--run-name", "r"]
    assert cli.main(args) == 2
    assert re.search(message, one_error(capsys))


def test_full_disk_is_one_error_line(tmp_path, capsys, monkeypatch):
    import pipeline.runs as runs

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / "x"))

    monkeypatch.setattr(runs, "write_yaml", full)
    assert cli.main(["--comp", "diamonds", "--smoke", "--output-dir", str(tmp_path / "o")]) == 2
    assert "No space left on device. Free disk space" in one_error(capsys)


# ----------------------------------------------------------------------------- what a run writes


@pytest.mark.slow
def test_predictions_stay_in_the_training_target_range_and_files_are_readable(tiny_comp, tmp_path):
    from pipeline import run_competition

    cfg = tiny_comp("diamonds", train_rows=300, test_rows=120)
    common = ["model.name=linear", "cv.folds=2"]  # Ridge on price: negative prices for small stones
    free = run_competition(cfg, common + ["preprocessing.target_clip=false"], output_dir=tmp_path, run_name="free")
    clipped = run_competition(cfg, common, output_dir=tmp_path, run_name="clipped")
    train = pd.read_csv(cfg.parent / "data" / "train.csv.gz")
    lo, hi = train["price"].min(), train["price"].max()
    assert (pd.read_csv(free.files["test_pred"])["price"] < lo).any()
    for f in ("oof", "test_pred", "submission"):
        assert pd.read_csv(clipped.files[f])["price"].between(lo, hi).all()
    assert yaml.safe_load(clipped.files["config"].read_text())["preprocessing"]["target_clip"] is True
    # Files a teammate (or a Kaggle dataset upload) can read: the umask's mode, not mkstemp's 0600.
    umask = os.umask(0)
    os.umask(umask)
    for path in [*clipped.files.values(), clipped.run_dir / "run.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


@pytest.mark.slow
def test_scores_json_is_strict_json_when_a_score_is_nan(tiny_comp, tmp_path, monkeypatch):
    from pipeline import run_competition
    from pipeline.metrics import Metric, METRICS

    cfg = tiny_comp("health_insurance", train_rows=150, test_rows=40)
    auc = METRICS.get("auc")
    monkeypatch.setitem(METRICS._items, "auc", Metric("auc", lambda y, p, t: float("nan"), "maximize",
                                                       auc.tasks, True))
    result = run_competition(cfg, ["model.name=linear", "cv.folds=2"], output_dir=tmp_path, run_name="nan")
    text = result.files["scores"].read_text()
    scores = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in scores.json"))
    assert scores["holdout"] is None and scores["cv"] is None


@pytest.mark.slow
def test_damaged_fold_is_trained_again_on_resume(tiny_comp, tmp_path, monkeypatch):
    from pipeline import run_competition

    cfg = tiny_comp("diamonds", train_rows=150, test_rows=40)
    import pipeline.cv.loop as loop

    real = loop.fit_fold

    def dies(data, name, *a, **k):
        if name == "fold_1":
            raise KeyboardInterrupt
        return real(data, name, *a, **k)

    monkeypatch.setattr(loop, "fit_fold", dies)
    with pytest.raises(KeyboardInterrupt):
        run_competition(cfg, FAST, output_dir=tmp_path, run_name="d")
    monkeypatch.setattr(loop, "fit_fold", real)
    fold0 = tmp_path / "diamonds" / "d" / "folds" / "fold_0"
    (fold0 / "predictions.npz").write_bytes(b"damaged")
    result = run_competition(cfg, FAST, output_dir=tmp_path, run_name="d")
    log = (result.run_dir / "run.log").read_text()
    assert "fold_0 (1/2): the saved fold" in log and "is damaged" in log and "training it again" in log
    assert len(result.scores["folds"]) == 2 and np.isfinite(result.scores["cv"])


@pytest.mark.slow
def test_export_of_another_competitions_run_uses_that_run(tiny_comp, tmp_path):
    from pipeline import run_competition
    from pipeline import export_run

    cfg = tiny_comp("health_insurance", train_rows=200, test_rows=40)
    result = run_competition(cfg, FAST, output_dir=tmp_path, run_name="h")
    export = export_run("diamonds", result.run_dir, ["float32"], output_dir=tmp_path,
                        overrides=["export.latency_runs=5"])
    report = json.loads((export / "export_report.json").read_text())
    assert report["metric"] == "auc" and report["run"] == "h"
