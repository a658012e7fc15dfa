"""One resolution step (pipeline/setup.py) and the settings inferred from the data (data/infer.py):
the config, the output root and --smoke resolved once at the entry point, the rows read once, a
tuning trial's config resolved against the study's rows, and nothing below the entry points that
reads a config file or builds the output root."""
import ast
import pickle

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, cut, write_competition
from pipeline.errors import ConfigError
from pipeline.runs import shared_folds_dir
from pipeline.setup import SMOKE_ROWS, Setup


def competition(tmp_path, name="diamonds", rows=600):
    return write_competition(tmp_path / name, name, cut(name, rows, 100))


def test_resolve_applies_params_overrides_and_smoke_once_and_reads_the_rows_once(tmp_path):
    overlay = tmp_path / "best.yaml"
    overlay.write_text("train:\n  lr: 0.004\n")
    setup = Setup.resolve(str(competition(tmp_path)), ["cv.folds=3"], overlay, output_dir=tmp_path / "out",
                          smoke=True)
    assert setup.cfg.train.lr == 0.004
    assert setup.cfg.cv.folds == 2 and setup.cfg.train.epochs == 1  # --smoke's settings win over --set
    assert setup.root == tmp_path / "out" and setup.root.is_dir() and setup._data is None  # nothing read yet
    data = setup.data
    assert setup.data is data and len(data.train) == SMOKE_ROWS
    assert data.cfg.task == "regression" and data.cfg.train.loss == "mse"  # inferred into the data's config
    assert setup.cfg.train.loss == "auto"  # the Setup keeps the config before the data


def test_paths_come_from_the_setup(tmp_path):
    setup = Setup.resolve(str(competition(tmp_path)), output_dir=tmp_path / "out")
    assert setup.comp_dir == tmp_path / "out" / "diamonds"
    assert setup.folds_dir == shared_folds_dir(setup.root, "diamonds")
    assert setup.study_dir("s1") == setup.comp_dir / "studies" / "s1"
    assert setup.lr_find_path("t").parent == setup.comp_dir / "lr_find"
    with pytest.raises(ConfigError):
        setup.study_dir("../elsewhere")


def test_a_read_only_command_does_not_create_the_output_root(tmp_path):
    setup = Setup.resolve(str(competition(tmp_path)), output_dir=tmp_path / "absent", writable=False)
    assert not (tmp_path / "absent").exists() and setup.root == tmp_path / "absent"


def test_a_trial_config_reuses_the_rows_and_infers_again_or_reads_again(tmp_path):
    setup = Setup.resolve(str(competition(tmp_path)), output_dir=tmp_path / "out")
    base = setup.data
    from pipeline.config_files import apply_overrides, resolve

    def trial(overrides):
        return resolve(apply_overrides(setup.cfg.to_dict(), overrides), "trial", setup.cfg.path)

    same_rows = setup.data_for(trial(["train.lr=0.01", "model.realmlp.epochs=2"]))
    assert same_rows.train is base.train and same_rows.cfg.train.lr == 0.01
    assert same_rows.cfg.task == "regression" and same_rows.cfg.cv.scheme == "kfold"  # inferred again
    poisson = setup.data_for(trial(["train.loss=poisson"]))
    assert poisson.train is base.train and poisson.cfg.train.loss == "poisson"
    dropped = setup.data_for(trial(["features.drop=[depth]"]))  # reads the files differently
    assert dropped.train is not base.train and "depth" not in dropped.columns


def test_a_setup_goes_to_a_worker_process_without_its_rows(tmp_path):
    setup = Setup.resolve(str(competition(tmp_path)), output_dir=tmp_path / "out")
    setup.data
    copy = pickle.loads(pickle.dumps(setup))
    assert copy._data is None and copy.cfg == setup.cfg and copy.root == setup.root
    assert len(copy.data.train) == len(setup.data.train)


def test_inferred_settings_count_target_and_log_scale_metric(tmp_path):
    from pipeline.data.infer import count_like, infer_task

    rng = np.random.default_rng(0)
    assert count_like(rng.poisson(0.7, 500).astype(float))
    assert not count_like(rng.normal(1000, 10, 500).round())  # whole-dollar prices are not counts
    assert infer_task(pd.Series([0, 1, 1, 0]))[0] == "binary"
    assert infer_task(pd.Series(np.arange(50) * 1.5))[0] == "regression"
    setup = Setup.resolve(str(competition(tmp_path)), ["metric=rmsle"], output_dir=tmp_path / "out")
    assert setup.data.cfg.preprocessing.target_log1p is True and setup.data.cfg.train.loss == "mse"


# Modules that resolve inputs: the entry points and the resolution step itself.
RESOLVERS = {"pipeline/api.py", "pipeline/setup.py", "pipeline/config_files.py", "pipeline/outputs.py",
             "pipeline/__init__.py"}


def test_nothing_below_the_entry_points_reads_a_config_file_or_builds_the_output_root():
    calls = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel in RESOLVERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = (node.func.attr if isinstance(getattr(node, "func", None), ast.Attribute) else
                    getattr(getattr(node, "func", None), "id", None)) if isinstance(node, ast.Call) else None
            if name in ("load_config", "find_config", "output_root", "ensure_writable"):
                calls.append(f"{rel}:{node.lineno} {name}")
            if isinstance(node, ast.Name) and node.id == "OUTPUT_ROOT":
                calls.append(f"{rel}:{node.lineno} OUTPUT_ROOT")
    assert calls == []
