"""The Run: one object per run folder. Each test here is a way the commands used to get a run
silently wrong (or refuse it for the wrong reason): the overlay lost between commands, repeated
CV not exportable, resume on changed data, two processes in one folder, finished and failed names,
unfinished stack members, and no run-level prediction."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

import run as cli_main
from conftest import FAST, ROOT
from pipeline import load_run, run_competition
from pipeline.errors import ConfigError, DataError, PipelineError
from pipeline.runs import Run, RunLock, RunLockedError


def kill_on(name, monkeypatch):
    """Make the fold named ``name`` die as a Ctrl-C would."""
    import pipeline.cv.loop as loop

    real = loop.fit_fold

    def fit(data, fold, *args, **kwargs):
        if fold == name:
            raise KeyboardInterrupt
        return real(data, fold, *args, **kwargs)

    monkeypatch.setattr(loop, "fit_fold", fit)
    return real


def count_fits(monkeypatch, real):
    import pipeline.cv.loop as loop

    calls = []
    monkeypatch.setattr(loop, "fit_fold", lambda *a, **k: (calls.append(a[1]), real(*a, **k))[1])
    return calls


# ----------------------------------------------------------------------------- lock (fast)


def test_lock_names_its_holder_and_a_dead_holder_is_taken_over(tmp_path):
    first = RunLock(tmp_path / "run.lock")
    assert first.acquire("r") == {}
    with pytest.raises(RunLockedError, match=rf"run 'r' is being written by pid {os.getpid()} on host "
                                             rf"{socket.gethostname()}"):
        RunLock(tmp_path / "run.lock").acquire("r")
    first.release()
    assert (tmp_path / "run.lock").read_text() == ""  # released cleanly: nobody to take over from
    # A process that died holding the lock: the kernel freed the flock, its record stays.
    (tmp_path / "run.lock").write_text(json.dumps({"pid": 999999, "host": "gone", "since": "then"}))
    again = RunLock(tmp_path / "run.lock")
    assert again.acquire("r") == {"pid": 999999, "host": "gone", "since": "then"}
    again.release()


# ----------------------------------------------------------------------------- runs (slow)


@pytest.mark.slow
def test_finished_run_is_not_retrained_and_exits_0(tiny_comp, tmp_path, monkeypatch, capsys):
    cfg = tiny_comp("diamonds", train_rows=150, test_rows=40)
    out = tmp_path / "out"
    first = run_competition(cfg, FAST, output_dir=out, run_name="done")
    info = json.loads((first.run_dir / "run.json").read_text())
    assert info["state"] == "finished" and info["pid"] is None and len(info["sessions"]) == 1
    assert set(info["fingerprint"]["files"]) == {"train", "test", "sample_submission", "solution"}
    import pipeline.cv.loop as loop

    monkeypatch.setattr(loop, "fit_fold", lambda *a, **k: pytest.fail("a finished run was retrained"))
    assert cli_main.main(["--comp", str(cfg), "--output-dir", str(out), "--run-name", "done", *sum(
        (["--set", o] for o in FAST), [])]) == 0
    said = capsys.readouterr().out
    assert "run done is finished (OOF rmse" in said and "nothing to do" in said
    # Other settings under a finished name: refused, naming what differs (not silently "finished").
    with pytest.raises(ConfigError, match=r"run 'done' is finished and was made with a different config \(differs at "
                                          r"train.lr\)"):
        run_competition(cfg, FAST + ["train.lr=0.5"], output_dir=out, run_name="done")


@pytest.mark.slow
def test_resume_after_changed_train_csv_is_refused_and_seconds_add_up(tiny_comp, tmp_path, monkeypatch):
    cfg = tiny_comp("health_insurance", train_rows=200, test_rows=50)
    out = tmp_path / "out"
    real = kill_on("fold_1", monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_competition(cfg, FAST, output_dir=out, run_name="r")
    run_dir = out / "health_insurance" / "r"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["state"] == "interrupted" and info["error"] == "interrupted (Ctrl-C)" and info["pid"] is None
    # The data changes between the sessions: resuming would mix folds trained on two data sets.
    train_csv = cfg.parent / "data" / "train.csv.gz"
    original_bytes = train_csv.read_bytes()
    original = pd.read_csv(train_csv)
    changed = original.copy()
    changed.loc[5, "whi"] = "no" if changed.loc[5, "whi"] == "yes" else "yes"
    changed.to_csv(train_csv, index=False)
    calls = count_fits(monkeypatch, real)
    with pytest.raises(DataError, match=r"run 'r' has finished folds that were made from other data: train changed "
                                        r"since \(sha256 differs\). Use a new --run-name"):
        run_competition(cfg, FAST, output_dir=out, run_name="r")
    assert calls == [] and not (run_dir / "scores.json").exists()
    # The same data again: it resumes, and its seconds count both sessions.
    train_csv.write_bytes(original_bytes)
    result = run_competition(cfg, FAST, output_dir=out, run_name="r")
    assert calls == ["fold_1"]
    info = json.loads((run_dir / "run.json").read_text())
    sessions = [s["seconds"] for s in info["sessions"]]
    assert info["state"] == "finished" and len(sessions) == 2  # the killed session and this one (the refusal trained nothing)
    assert result.scores["seconds"] == pytest.approx(sum(sessions), abs=0.2)
    assert result.scores["seconds"] > sessions[-1]


@pytest.mark.slow
def test_run_that_failed_before_any_fold_can_start_again(tiny_comp, tmp_path, monkeypatch):
    cfg = tiny_comp("diamonds", train_rows=150, test_rows=40)
    out = tmp_path / "out"
    kill_on("fold_0", monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_competition(cfg, FAST + ["model.mlp.hidden=[999]"], output_dir=out, run_name="again")
    monkeypatch.undo()
    # Nothing finished: the name is free again, even with other settings.
    result = run_competition(cfg, FAST, output_dir=out, run_name="again")
    assert result.scores["cv"] > 0
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["model"]["mlp"]["hidden"] == [16, 8]


@pytest.mark.slow
def test_two_processes_on_one_run_name(tiny_comp, tmp_path):
    cfg = tiny_comp("diamonds", train_rows=300, test_rows=40)
    args = [sys.executable, "run.py", "--comp", str(cfg), "--output-dir", str(tmp_path / "out"), "--run-name",
            "same", "--set", "train.epochs=60", "--set", "train.early_stopping=null", "--set", "cv.folds=2",
            "--set", "train.batch_size=32", "--set", "model.mlp.hidden=[16]", "--set", "diagnostics.importance=false",
            "--set", "diagnostics.adversarial=false"]  # the lock is held through training, not the diagnostics
    procs = [subprocess.Popen(args + (["--set", "train.lr=0.002"] if i else []), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0, 2], results
    loser = next(err for rc, _, err in results if rc == 2)
    line = [l for l in loser.splitlines() if l.startswith("error: ")]
    assert len(line) == 1 and "run 'same' is being written by pid" in line[0] and socket.gethostname() in line[0]
    info = json.loads((tmp_path / "out" / "diamonds" / "same" / "run.json").read_text())
    assert info["state"] == "finished" and len(info["sessions"]) == 1


@pytest.mark.slow
def test_predict_reproduces_test_pred_and_names_a_missing_column(tiny_comp, tmp_path, capsys):
    cfg = tiny_comp("health_insurance", train_rows=200, test_rows=60)
    out = tmp_path / "out"
    result = run_competition(cfg, FAST + ["cv.repeats=2"], output_dir=out, run_name="p")
    test_csv = cfg.parent / "data" / "test.csv.gz"
    target = tmp_path / "preds.csv"
    assert cli_main.main(["--comp", str(cfg), "--output-dir", str(out), "--predict", "p", "--input", str(test_csv),
                          "--out", str(target)]) == 0
    # Python's float() of the text as written: pandas 2.2's default parser may miss a float by its last bit.
    expected = pd.read_csv(result.run_dir / "test_pred.csv", dtype={"whi": str}).assign(whi=lambda d: d.whi.map(float))
    got = pd.read_csv(target, dtype={"whi": str}).assign(whi=lambda d: d.whi.map(float))
    assert list(got.columns) == list(expected.columns) and (got["id"] == expected["id"]).all()
    # To the bit: the networks' traced forward pass in the fit's chunks, the ensemble's weights unrounded.
    np.testing.assert_array_equal(got["whi"], expected["whi"])
    # The same from a notebook, on a DataFrame.
    frame = pd.read_csv(test_csv)
    np.testing.assert_array_equal(load_run(result.run_dir).predict(frame)["whi"], expected["whi"])
    # Each member's test predictions as its fold made them, the network's too (its weight above may be 0).
    from pipeline.data.read import read_table

    run = load_run(result.run_dir)
    rows = read_table(test_csv, "test", ("id",))
    for unit in run.trained_units():
        saved = np.load(run.fold_dir(unit) / "predictions.npz")
        for name, pred in run.artifact(unit).predict_members(rows).items():
            np.testing.assert_array_equal(pred, saved[f"test__{name}"], err_msg=f"{unit.name} {name}")
    capsys.readouterr()
    frame.drop(columns=["husby"]).to_csv(tmp_path / "short.csv", index=False)
    assert cli_main.main(["--comp", str(cfg), "--output-dir", str(out), "--predict", "p", "--input",
                          str(tmp_path / "short.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "lacks column(s) ['husby'] that the model was trained on" in err


@pytest.mark.slow
def test_params_overlay_reaches_export_and_stack(tiny_comp, tmp_path):
    from pipeline import export_run
    from pipeline import stack_runs

    cfg = tiny_comp("health_insurance", train_rows=200, test_rows=60)
    out = tmp_path / "out"
    overlay = tmp_path / "best.yaml"
    overlay.write_text(yaml.safe_dump({"model": {"mlp": {"dropout": 0.1}}, "export": {"representative_rows": 37},
                                       "train": {"lr": 0.003}}))
    a = run_competition(cfg, FAST, output_dir=out, run_name="a", params=overlay)
    run_competition(cfg, FAST + ["model.name=hgb"], output_dir=out, run_name="b")  # a cheap partner, same folds
    # Export reads the run's own config: the overlay's model and export settings, not the base's.
    export = export_run(cfg, "a", ["int8"], output_dir=out, overrides=["export.latency_runs=5"])
    report = json.loads((export / "export_report.json").read_text())
    assert report["export"]["representative_rows"] == 37 and report["export"]["latency_runs"] == 5
    assert yaml.safe_load((a.run_dir / "config.yaml").read_text())["model"]["mlp"]["dropout"] == 0.1
    # Training settings of a finished run cannot be changed on export.
    with pytest.raises(ConfigError, match=r"--set train.lr differs from run a's config; a finished run keeps"):
        export_run(cfg, "a", ["int8"], output_dir=out, overrides=["train.lr=0.1"])
    # A stack resolved with the overlay records it.
    stacked = stack_runs(cfg, ["a", "b"], methods=["hill"], output_dir=out, run_name="s", params=overlay)
    saved = yaml.safe_load((stacked.run_dir / "config.yaml").read_text())
    assert saved["train"]["lr"] == 0.003 and saved["stack"]["runs"] == ["a", "b"]
    assert json.loads((stacked.run_dir / "run.json").read_text())["kind"] == "stack"


@pytest.mark.slow
def test_repeated_cv_run_exports_to_int8(tiny_comp, tmp_path):
    from pipeline import export_run

    cfg = tiny_comp("diamonds", train_rows=150, test_rows=40)
    out = tmp_path / "out"
    run_competition(cfg, FAST + ["cv.repeats=2", "train.epochs=1"], output_dir=out, run_name="rep")
    export = export_run(cfg, "rep", ["int8"], output_dir=out, overrides=["export.latency_runs=5",
                                                                          "export.representative_rows=50"])
    report = json.loads((export / "export_report.json").read_text())
    assert report["fold_unit"] == "r1_fold_0" and (export / "int8.tflite").is_file()
    assert np.isfinite(report["artifacts"][0]["valid"])


@pytest.mark.slow
def test_stack_takes_finished_runs_only_and_never_writes_into_a_run(tiny_comp, tmp_path, monkeypatch):
    from pipeline import stack_runs

    cfg = tiny_comp("health_insurance", train_rows=200, test_rows=50)
    out = tmp_path / "out"
    run_competition(cfg, FAST, output_dir=out, run_name="a")
    run_competition(cfg, ["model.name=linear", "cv.folds=2"], output_dir=out, run_name="b")
    kill_on("fold_1", monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_competition(cfg, FAST + ["model.name=hgb"], output_dir=out, run_name="half")
    monkeypatch.undo()
    with pytest.raises(DataError, match=r"--stack half: .* is not a finished run \(state interrupted\)"):
        stack_runs(cfg, ["a", "half"], output_dir=out, run_name="s")
    # A stack's --run-name must not land in a training run's folder.
    with pytest.raises(ConfigError, match=r"half: is a train run, not a stack run"):
        stack_runs(cfg, ["a", "b"], output_dir=out, run_name="half")
    assert not (out / "health_insurance" / "half" / "scores.json").exists()
    assert not (out / "health_insurance" / "s").exists()


def test_old_run_folder_gives_one_clear_error(tmp_path):
    old = tmp_path / "diamonds" / "old"
    old.mkdir(parents=True)
    (old / "config.yaml").write_text("data: {target: price}\n")
    (old / "scores.json").write_text("{}")
    with pytest.raises(PipelineError, match=r"--export-run old: .* has no run.json \(made by an older version"):
        Run.open("old", tmp_path, "diamonds", what="--export-run")


def test_a_run_saved_before_the_model_sections_still_opens(tmp_path):
    """A finished run's config.yaml of the flat model schema reads as the sections it trained with:
    --predict, --export-run and --stack keep working on old run folders."""
    from pipeline.runs import _saved_config

    old = {"name": "x", "data": {"target": "y"},
           "model": {"name": "hgb", "hidden": [64, 32], "dropout": 0.2, "filters": [8], "head_epochs": 0,
                     "params": {"max_iter": 50}, "member_params": {"linear": {"alpha": 2.0}},
                     "members": ["hgb", "mlp", "linear"]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    model = _saved_config(tmp_path).model
    assert model.mlp.hidden == [64, 32] and model.mlp.dropout == 0.2
    assert model.cnn.hidden == [64, 32] and model.cnn.filters == [8] and model.backbone.dropout == 0.2
    assert model.hgb == {"max_iter": 50} and model.linear == {"alpha": 2.0}
    assert model.members == ["hgb", "mlp", "linear"]
