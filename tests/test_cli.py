"""The command-line contract: arguments, exit codes, one-line errors, outputs of a run."""
import json
import subprocess
import sys

import pytest

import run
from conftest import ROOT


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "run.py", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def one_error_line(stderr: str) -> str:
    lines = [l for l in stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.slow
def test_smoke_run_through_the_command_line(tmp_path):
    proc = cli("--comp", "diamonds", "--smoke", "--output-dir", str(tmp_path), "--run-name", "s1",
               "--set", "train.log_every=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = tmp_path / "diamonds" / "s1"
    scores = json.loads((run_dir / "scores.json").read_text())
    assert scores["metric"] == "rmse" and len(scores["folds"]) == 2
    out = proc.stdout
    assert "fold_0 (1/2) epoch 1/1" in out and "OOF (cv): rmse" in out and "holdout: rmse" in out
    assert f"outputs in {run_dir}" in out and "wall time" in out
    assert "ms/step" not in out and "━" not in out  # no Keras per-batch progress bars


def test_config_error_is_one_line_exit_2_and_traceback_only_with_debug(tmp_path):
    proc = cli("--set", "train.epoch=1", "--output-dir", str(tmp_path))
    assert proc.returncode == 2
    assert one_error_line(proc.stderr).startswith(
        "error: --set: unknown key 'train.epoch'. Did you mean: train.epochs")
    assert not any(tmp_path.iterdir())  # nothing written
    debug = cli("--set", "train.epoch=1", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


@pytest.mark.parametrize("args, message", [
    (["--comp", "nope"], r"error: --comp nope: no competition of that name"),
    (["--set", "cv.folds=1"], r"error: .*config.yaml with --set: cv.folds: Input should be greater than or equal to 2"),
    (["--set", "metric=gini"], r"unknown metric 'gini'. Valid:"),
    (["--set", "model.name=resnet"], r"unknown model 'resnet'. Valid: \[.*'mlp'.*'resnet50'"),
    (["--set", "preprocessing.numeric=zscore"], r"unknown numeric preprocessor 'zscore'"),
    (["--set", "train.epochs"], r"--set 'train.epochs': expected dotted.key=value"),
    (["--data-dir", "/nonexistent/dir"], r"error: /nonexistent/dir/train.csv.gz: file not found \(config field data.train\)"),
    (["--export-run", "nope"], r"error: --export-run nope: no run folder .*Runs of this competition: \[\]"),
    (["--export-run", "nope", "--export", "int4"], r"error: --export int4: unknown artifact. Valid: \['float32'"),
    (["--export-run", "r", "--set", "export.sparsity=1.5", "--export", "prune"], r"export.sparsity: Input should be less than 1"),
    (["--stack", "a"], r"--stack needs at least 2 runs"),
    (["--tune", "--set", "tune.space={train.lr: {type: float, low: 1, high: 0.1}}"], r"low < high"),
    # A command's own flags given to another: refused, not ignored (--out with a training run wrote nothing).
    (["--out", "preds.csv"], r"error: --out goes with --predict, and this command is training: add --predict"),
    (["--input", "a.csv", "--out", "b.csv", "--leaderboard"], r"--input and --out go with --predict, and this "
                                                              r"command is --leaderboard"),
    (["--trials", "5"], r"--trials goes with --tune, and this command is training"),
    (["--export-run", "r", "--storage", "s.log", "--jobs", "2"], r"--storage and --jobs go with --tune"),
    (["--tune", "--stack-methods", "linear"], r"--stack-methods goes with --stack, and this command is --tune"),
])
def test_bad_arguments_in_process(args, message, capsys, tmp_path):
    assert run.main(args + ["--output-dir", str(tmp_path / "o")]) == 2
    import re
    assert re.search(message, one_error_line(capsys.readouterr().err))
    assert not (tmp_path / "o" / "diamonds").exists()


def test_non_writable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where a folder should be: fails even for root
    assert run.main(["--output-dir", str(blocker / "out")]) == 2
    assert "output directory is not writable" in one_error_line(capsys.readouterr().err)


def test_malformed_yaml_via_cli(tmp_path, capsys):
    bad = tmp_path / "comp.yaml"
    bad.write_text("data:\n  target: [price\n")
    assert run.main(["--comp", str(bad)]) == 2
    assert f"error: {bad}: malformed YAML at line" in one_error_line(capsys.readouterr().err)


def test_help_lists_the_contract():
    proc = cli("--help")
    for flag in ("--comp", "--run-name", "--set", "--data-dir", "--output-dir", "--smoke", "--debug", "--params",
                 "--tune", "--trials", "--timeout", "--study", "--storage", "--jobs", "--stack", "--stack-methods"):
        assert flag in proc.stdout


def test_export_help_lists_every_artifact():
    from pipeline.export.run import ARTIFACTS

    assert tuple(run.ARTIFACTS) == tuple(ARTIFACTS)
    proc = cli("--help")
    assert all(a in proc.stdout for a in ARTIFACTS) and "--predict" in proc.stdout and "--leaderboard" in proc.stdout
