"""Kaggle kernels: the submission where Kaggle looks for it, and a config in /kaggle/working that
is not named "working"."""
import pandas as pd
import pytest
import yaml

from pipeline.config_files import load_config
from pipeline.errors import ConfigError


def test_a_config_in_a_kernels_working_folder_is_named_by_its_data(tmp_path):
    working = tmp_path / "working"
    working.mkdir()
    (working / "config.yaml").write_text(yaml.safe_dump({"data": {"target": "price", "dir": "/kaggle/input/my-comp"}}))
    assert load_config(working / "config.yaml").name == "my-comp"
    (working / "config.yaml").write_text(yaml.safe_dump({"data": {"target": "price"}}))
    with pytest.raises(ConfigError, match=r"the competition has no name .* Add name: <competition>"):
        load_config(working / "config.yaml")
    (working / "config.yaml").write_text(yaml.safe_dump({"name": "mine", "data": {"target": "price"}}))
    assert load_config(working / "config.yaml").name == "mine"


@pytest.mark.slow
def test_submission_is_copied_where_kaggle_looks(tiny_comp, tmp_path, monkeypatch):
    import pipeline.runner as runner
    import run as cli
    from pipeline import run_competition

    cfg = tiny_comp("diamonds", train_rows=150, test_rows=40)
    working = tmp_path / "kaggle-working"
    working.mkdir()
    monkeypatch.setattr(runner, "KAGGLE_WORKING", working)  # a kernel: /kaggle/working exists
    result = run_competition(cfg, ["model.name=linear", "cv.folds=2"], output_dir=working, run_name="k")
    copied = working / "submission.csv"
    assert result.files["submission_copy"] == copied
    assert pd.read_csv(copied).equals(pd.read_csv(result.run_dir / "submission.csv"))
    # Outside a kernel: only where --submission says.
    monkeypatch.setattr(runner, "KAGGLE_WORKING", tmp_path / "absent")
    target = tmp_path / "elsewhere" / "sub.csv"
    assert cli.main(["--comp", str(cfg), "--output-dir", str(tmp_path / "out"), "--run-name", "k", "--set",
                     "model.name=linear", "--set", "cv.folds=2", "--submission", str(target)]) == 0
    assert pd.read_csv(target).shape == pd.read_csv(result.run_dir / "submission.csv").shape
    assert not (tmp_path / "out" / "submission.csv").exists()
