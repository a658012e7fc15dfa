"""Nothing lost, nothing silently wrong (issue 26): outputs confined, ids kept as written, run
folders verified when opened, a lock that deleting a file cannot break, SIGTERM and failures
leaving a final state, rules before training, and plain one-line messages. Each test is a case a
careless or hostile Kaggler found."""
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import run as cli_main
from conftest import ROOT, cut, write_competition
from pipeline import fit, load_run, run_competition
from pipeline.config_files import load_config
from pipeline.data import load_competition
from pipeline.errors import ConfigError, DataError
from pipeline.leaderboard import leaderboard
from pipeline.logs import LOGGER, run_logging
from pipeline.paths import output_file
from pipeline.runs import Run, RunLock, RunLockedError
from pipeline.setup import Setup

# A run that trains in a second or two: scikit-learn's HGB alone, two folds, no diagnostics.
QUICK = ["model.name=hgb", "cv.folds=2", "diagnostics.importance=false", "diagnostics.adversarial=false",
         "diagnostics.report=false", "diagnostics.plots=false"]


def edited(tmp_path, name="health_insurance", train_rows=200, test_rows=60, **edits):
    frames = cut(name, train_rows, test_rows)
    for key, change in edits.items():
        frames[key] = change(frames[key])
    return write_competition(tmp_path / name, name, frames)


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ----------------------------------------------------------------------------- confined outputs


def test_an_output_file_is_never_a_folder_an_input_or_inside_a_run_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"--out .*: is a folder. Give a file name"):
        output_file(tmp_path, "--out")
    source = tmp_path / "rows.csv"
    source.write_text("id\n1\n")
    with pytest.raises(ConfigError, match=r"is also this command's input"):
        output_file(tmp_path / "." / "rows.csv", "--out", (source,))
    run_dir = tmp_path / "comp" / "r"
    (run_dir / "folds" / "fold_0").mkdir(parents=True)
    (run_dir / "run.json").write_text("{}")
    for inside in (run_dir / "scores.json", run_dir / "folds" / "fold_0" / "model.keras", run_dir / "new.csv"):
        with pytest.raises(ConfigError, match=rf"lies inside the run folder {run_dir}"):
            output_file(inside, "--out")
    assert output_file(tmp_path / "comp" / "preds.csv", "--out") == tmp_path / "comp" / "preds.csv"


# ----------------------------------------------------------------------------- ids and rules


def test_ids_are_read_as_written_and_a_blank_id_names_its_row(tmp_path):
    def padded(df):
        return df.assign(id=[f"{i:06d}" for i in range(len(df))])

    cfg = edited(tmp_path, train=padded)
    data = load_competition(load_config(str(cfg)))
    assert data.train["id"].iloc[3] == "000003"
    blank = edited(tmp_path / "b", test=lambda df: df.assign(id=df["id"].astype(object).where(df.index != 5, None)))
    with pytest.raises(DataError, match=r"test.csv.gz: id column 'id' is blank in 1 row\(s\) \(first: row 7\)"):
        load_competition(load_config(str(blank)))


def test_a_classes_metric_on_a_continuous_target_is_refused_before_training(tmp_path):
    cfg = edited(tmp_path, "diamonds")
    with pytest.raises(ConfigError, match=r"metric auc scores classes, but target 'price' is continuous .* Set a "
                                          r"regression metric .* or task: multiclass"):
        Setup.resolve(str(cfg), ["metric=auc", "task=null"]).data
    for metric in ("logloss", "accuracy"):
        with pytest.raises(ConfigError, match="is continuous"):
            Setup.resolve(str(cfg), [f"metric={metric}", "task=null"]).data


def test_labels_differing_only_in_case_are_an_error_and_spaces_are_merged(tmp_path, capsys):
    def cased(df):
        return df.assign(whi=np.where(np.arange(len(df)) % 7 == 0, "YES", df["whi"].astype(str)))

    with pytest.raises(DataError, match=r"target 'whi' holds labels 'YES', 'yes' that differ only in case"):
        load_competition(load_config(str(edited(tmp_path, train=cased))))

    def spaced(df):
        return df.assign(whi=np.where(np.arange(len(df)) % 7 == 0, df["whi"].astype(str) + " ", df["whi"]))

    data = load_competition(load_config(str(edited(tmp_path / "s", train=spaced))))
    assert data.classes == ["no", "yes"] and data.notes["stripped"]["whi"] > 0


def test_target_equal_to_id_and_a_solution_without_ids_are_named(tmp_path):
    cfg = edited(tmp_path)
    with pytest.raises(ConfigError, match=r"data.target and data.id are both 'id'"):
        Setup.resolve(str(cfg), ["data.target=id"]).data
    no_id = edited(tmp_path / "s", solution=lambda df: df.drop(columns=["id"]))
    with pytest.raises(DataError, match=r"solution.csv.gz: no column 'id' \(data.id\)"):
        Setup.resolve(str(no_id)).data


def test_yaml_duplicate_keys_and_deep_nesting_are_one_error_line(tmp_path, capsys):
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: x\ndata:\n  target: a\n  target: b\n")
    assert cli_main.main(["--comp", str(dup)]) == 2
    assert "line 4, column 3: key 'target' is given twice" in one_error(capsys)
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: x\ndata:\n  target: " + "[" * 20000 + "]" * 20000 + "\n")
    assert cli_main.main(["--comp", str(deep)]) == 2
    assert "nested too deeply" in one_error(capsys)


def test_messages_show_values_not_numpy_reprs(tmp_path):
    def nan_id(df):
        return df.assign(whi=np.where(np.arange(len(df)) == 4, np.nan, df["whi"]))

    with pytest.raises(DataError) as caught:
        load_competition(load_config(str(edited(tmp_path, train=nan_id))))
    assert "missing in 1 rows (first id '" in str(caught.value) and "np." not in str(caught.value)
    assert str(DataError(f"{np.float64(0.5)!r} {np.int64(3)!r} {np.str_('a')!r}")) == "0.5 3 'a'"


def test_fit_names_its_own_parameters(tmp_path):
    frames = cut("health_insurance", 200, 60)
    train = frames["train"]
    with pytest.raises(ConfigError, match=r"fit\(train=...\): column name\(s\) \['hhi'\] appear more than once"):
        fit(train=pd.concat([train, train[["hhi"]]], axis=1), test=frames["test"], target="whi", output_dir=tmp_path)
    with pytest.raises(DataError) as caught:
        fit(train=train.drop(columns=["whi"]), test=frames["test"], target="whi", output_dir=tmp_path)
    message = str(caught.value)
    assert message.startswith("fit(train=...): no column 'whi' (fit(target=...))") and "inputs/" not in message


def test_each_run_log_holds_only_its_own_threads_lines(tmp_path):
    def write(name):
        with run_logging(tmp_path / name / "run.log"):
            for i in range(30):
                LOGGER.info("line of %s %d", name, i)
                time.sleep(0.001)

    threads = [threading.Thread(target=write, args=(n,)) for n in ("a", "b")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for mine, other in (("a", "b"), ("b", "a")):
        text = (tmp_path / mine / "run.log").read_text()
        assert text.count(f"line of {mine}") == 30 and f"line of {other}" not in text


# ----------------------------------------------------------------------------- lock, state, faults


def test_deleting_run_lock_does_not_free_the_run(tmp_path):
    first = RunLock(tmp_path / "run.lock")
    first.acquire("r")
    (tmp_path / "run.lock").unlink()
    with pytest.raises(RunLockedError, match=r"run 'r' is being written by"):
        RunLock(tmp_path / "run.lock").acquire("r")
    first.release()
    RunLock(tmp_path / "run.lock").acquire("r")


def test_a_replaced_run_folder_is_noticed_before_writing(tmp_path):
    setup = Setup.resolve(str(edited(tmp_path)), QUICK, output_dir=tmp_path / "out")
    run = setup.create_run("r")
    other = {**run.info, "pid": 424242, "host": "elsewhere"}
    run.info_path.write_text(json.dumps(other))  # another process made the folder anew
    with pytest.raises(RunLockedError, match=r"now written by pid 424242 on host elsewhere"):
        run.check_owner()
    with pytest.raises(RunLockedError):
        run.end("finished")
    assert json.loads(run.info_path.read_text())["pid"] == 424242  # not overwritten


def test_a_dead_holder_is_taken_over_with_a_line(tmp_path, capsys):
    setup = Setup.resolve(str(edited(tmp_path)), QUICK, output_dir=tmp_path / "out")
    run = setup.create_run("r")
    (run.dir / "folds" / "fold_0").mkdir(parents=True)
    (run.dir / "folds" / "fold_0" / "result.json").write_text("{}")  # a finished fold to resume
    # kill -9: the kernel frees the flock; run.json still says running, run.lock names the dead pid.
    os.close(run._lock._text_fd)
    os.close(run._lock._fd)
    run.lock_path.write_text(json.dumps({"pid": 999999, "host": "gone", "since": "then"}))
    capsys.readouterr()
    again = setup.create_run("r")
    assert "taking over the lock from pid 999999 on host gone" in capsys.readouterr().out
    assert again.info["sessions"][-1]["took_over_from"] == {"pid": 999999, "host": "gone"}
    again.end("failed", "test")


def test_a_full_disk_still_leaves_a_final_state(tmp_path, monkeypatch):
    import pipeline.runs as runs

    setup = Setup.resolve(str(edited(tmp_path)), QUICK, output_dir=tmp_path / "out")
    run = setup.create_run("r")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "write_json", full)
    try:
        with run:
            raise OSError(errno.ENOSPC, "No space left on device", str(run.oof_path))
    except OSError:
        pass
    info = json.loads(run.info_path.read_text())
    assert info["state"] == "failed" and "No space left" in info["error"] and info["pid"] is None


def test_sigterm_and_ctrl_c_end_a_run_as_interrupted(tmp_path, monkeypatch, capsys):
    import pipeline.cv.loop as loop
    from pipeline.errors import Terminated

    cfg = edited(tmp_path)
    for raised, code, how in ((Terminated(), 143, "SIGTERM"), (KeyboardInterrupt(), 130, "Ctrl-C")):
        def stop(*args, **kwargs):
            raise raised

        monkeypatch.setattr(loop, "fit_fold", stop)
        name = f"r{code}"
        assert cli_main.main(["--comp", str(cfg), "--output-dir", str(tmp_path / "out"), "--run-name", name]
                             + [a for s in QUICK for a in ("--set", s)]) == code
        assert f"interrupted ({how}): finished folds are kept" in capsys.readouterr().err
        info = json.loads((tmp_path / "out" / "health_insurance" / name / "run.json").read_text())
        assert info["state"] == "interrupted" and info["pid"] is None


@pytest.mark.slow
def test_a_real_sigterm_exits_143_with_one_line(tmp_path):
    cfg = edited(tmp_path, train_rows=300)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "run.py", "--comp", str(cfg), "--output-dir", str(out), "--run-name",
                             "t", "--set", "model.name=mlp", "--set", "train.epochs=500",
                             "--set", "train.early_stopping=null", "--set", "model.mlp.hidden=[16]"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    info_path = out / "health_insurance" / "t" / "run.json"
    deadline = time.time() + 240
    while time.time() < deadline and not info_path.is_file():  # the run has begun
        time.sleep(0.2)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        proc.wait(timeout=30)
        raise AssertionError(proc.stderr.read()[-5000:])
    err = proc.stderr.read()
    assert code == 143, err
    assert [line for line in err.splitlines() if line.startswith("interrupted")] == [
        "interrupted (SIGTERM): finished folds are kept; rerun with the same --run-name to resume"]
    assert json.loads(info_path.read_text())["state"] == "interrupted"


# ----------------------------------------------------------------------------- a finished run


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One quick finished run (HGB, padded text ids) that the tests below damage in copies."""
    tmp = tmp_path_factory.mktemp("finished")
    cfg = edited(tmp, train=lambda df: df.assign(id=[f"{i:06d}" for i in range(len(df))]))
    result = run_competition(cfg, QUICK, output_dir=tmp / "out", run_name="done")
    return cfg, result.run_dir


def copy_run(finished, tmp_path):
    import shutil

    cfg, run_dir = finished
    dest = tmp_path / "out" / "health_insurance" / "done"
    shutil.copytree(run_dir, dest)
    return cfg, dest


@pytest.mark.slow
def test_predict_out_cannot_overwrite_a_run_or_its_input(finished, tmp_path, capsys):
    cfg, run_dir = copy_run(finished, tmp_path)
    rows = tmp_path / "rows.csv"
    pd.read_csv(cfg.parent / "data" / "test.csv.gz").to_csv(rows, index=False)
    before = {p: p.read_bytes() for p in (run_dir / "scores.json", rows)}
    fold_file = next(p for p in (run_dir / "folds").rglob("*") if p.is_file())
    args = ["--comp", str(cfg), "--output-dir", str(tmp_path / "out"), "--predict", str(run_dir), "--input", str(rows)]
    for out, says in ((run_dir / "scores.json", "lies inside the run folder"), (fold_file, "lies inside the run folder"),
                      (rows, "is also this command's input"), (tmp_path, "is a folder")):
        assert cli_main.main(args + ["--out", str(out)]) == 2
        assert says in one_error(capsys)
    assert {p: p.read_bytes() for p in before} == before
    assert Run.open(run_dir).finished  # still whole: the leaderboard and --predict read it


@pytest.mark.slow
def test_a_changed_or_deleted_run_file_is_named_everywhere(finished, tmp_path, capsys):
    cfg, run_dir = copy_run(finished, tmp_path)
    fold_file = sorted(p for p in (run_dir / "folds" / "fold_1").rglob("*") if p.is_file())[0]
    fold_file.unlink()
    rows = cfg.parent / "data" / "test.csv.gz"
    out = tmp_path / "out"
    assert cli_main.main(["--comp", str(cfg), "--output-dir", str(out), "--predict", str(run_dir), "--input",
                          str(rows), "--out", str(tmp_path / "p.csv")]) == 2
    assert f"{fold_file} is missing" in one_error(capsys)
    assert not (tmp_path / "p.csv").exists()
    with pytest.raises(DataError, match="is missing"):
        load_run(run_dir)
    assert cli_main.main(["--comp", str(cfg), "--output-dir", str(out), "--export-run", str(run_dir)]) == 2
    assert "is missing" in one_error(capsys)
    assert cli_main.main(["--comp", str(cfg), "--output-dir", str(out), "--stack", str(run_dir), str(run_dir)]) == 2
    assert "is missing" in one_error(capsys)
    board = leaderboard(out, "health_insurance")  # listed as damaged, not a failure of the table
    assert board.loc[0, "state"] == f"damaged: {fold_file.relative_to(run_dir)} is missing"
    assert pd.isna(board.loc[0, "cv"])
    (run_dir / "scores.json").write_text('{"metric": "au')  # truncated
    assert leaderboard(out, "health_insurance").loc[0, "state"] == "damaged: scores.json unreadable"
    assert cli_main.main(["--comp", str(cfg), "--output-dir", str(out), "--leaderboard"]) == 0


@pytest.mark.slow
def test_predict_input_with_text_in_a_numeric_column_is_one_line(finished, tmp_path, capsys):
    cfg, run_dir = finished
    rows = pd.read_csv(cfg.parent / "data" / "test.csv.gz")
    rows["husby"] = rows["husby"].astype(object)
    rows.loc[3, "husby"] = "lots"
    rows.to_csv(tmp_path / "rows.csv", index=False)
    assert cli_main.main(["--comp", str(cfg), "--predict", str(run_dir), "--input", str(tmp_path / "rows.csv"),
                          "--output-dir", str(run_dir.parent.parent)]) == 2
    assert "column 'husby' is numeric in run done, but row 5 holds 'lots'" in one_error(capsys)


@pytest.mark.slow
def test_a_foreign_run_is_used_with_a_line_naming_its_competition(finished, capsys):
    cfg, run_dir = finished
    assert cli_main.main(["--comp", "diamonds", "--predict", str(run_dir), "--input",
                          str(cfg.parent / "data" / "test.csv.gz"), "--output-dir", str(run_dir.parent.parent),
                          "--out", str(run_dir.parent.parent / "p.csv")]) == 0
    assert "a run of competition health_insurance (not diamonds); used with its own config" in capsys.readouterr().out


# Ids as a Kaggler's files hold them: zero-padded digits, unicode, inner and outer spaces, commas
# and quotes (the CSV quotes them), "NA" and "null" (ids, not missing values), very long ones.
_ID_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=300).filter(
    lambda t: t.strip() != "")
_IDS = st.lists(st.one_of(_ID_TEXT, st.from_regex(r"0{1,5}[0-9]{1,4}", fullmatch=True),
                          st.sampled_from(["NA", "null", "nan", "None", "N/A"])),
                min_size=90, max_size=90, unique=True)


@pytest.mark.slow
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ids=_IDS)
def test_ids_pass_through_train_submission_and_predict_unchanged(tmp_path_factory, ids):
    tmp = tmp_path_factory.mktemp("ids")
    frames = cut("health_insurance", 60, 30)
    frames["train"] = frames["train"].assign(id=ids[:60])
    test_ids = ids[60:]
    frames["test"] = frames["test"].assign(id=test_ids)
    frames["sample_submission"] = frames["sample_submission"].assign(id=test_ids)
    frames["solution"] = frames["solution"].assign(id=test_ids)
    cfg = write_competition(tmp / "health_insurance", "health_insurance", frames)
    result = run_competition(cfg, QUICK, output_dir=tmp / "out", run_name="ids")
    read = pd.read_csv(result.run_dir / "submission.csv", dtype=str, keep_default_na=False)
    assert read["id"].tolist() == test_ids
    assert pd.read_csv(result.run_dir / "oof.csv", dtype=str, keep_default_na=False)["id"].tolist() == ids[:60]
    out = tmp / "pred.csv"
    assert cli_main.main(["--comp", str(cfg), "--output-dir", str(tmp / "out"), "--predict", "ids", "--input",
                          str(cfg.parent / "data" / "test.csv.gz"), "--out", str(out)]) == 0
    assert pd.read_csv(out, dtype=str, keep_default_na=False)["id"].tolist() == test_ids
