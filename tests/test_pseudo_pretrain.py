"""Pseudo-labels (cv/pseudo.py) and self-supervised pretraining (training/pretrain.py)."""
import json

import numpy as np
import pytest

from pipeline import run_competition

HGB = ["model.name=hgb", "cv.folds=3", "diagnostics.importance=false", "diagnostics.adversarial=false",
       "diagnostics.report=false"]


def test_confident_rows_and_the_nt_xent_loss():
    import tensorflow as tf

    from pipeline.cv.pseudo import confident_rows
    from pipeline.training.pretrain import nt_xent

    idx, labels = confident_rows(np.array([0.97, 0.5, 0.02, 0.9]), 0.95)  # binary: P(class 1)
    assert idx.tolist() == [0, 2] and labels.tolist() == [1, 0]
    idx, labels = confident_rows(np.array([[0.1, 0.9, 0.0], [0.4, 0.3, 0.3], [0.0, 0.05, 0.95]]), 0.9)
    assert idx.tolist() == [0, 2] and labels.tolist() == [1, 2]
    # Two views that match score a lower loss than views paired at random.
    rng = np.random.default_rng(0)
    z = tf.math.l2_normalize(tf.constant(rng.normal(size=(8, 16)), tf.float32), axis=1)
    matched = nt_xent(tf.concat([z, z], 0), 0.2)
    shuffled = nt_xent(tf.concat([z, tf.gather(z, rng.permutation(8))], 0), 0.2)
    assert float(matched) < float(shuffled)


@pytest.mark.slow
def test_pseudo_labels_are_each_folds_own_and_never_its_validation_rows(tiny_comp, tmp_path, monkeypatch):
    import pipeline.cv.loop as loop
    from pipeline.cv.pseudo import fold_test_prediction

    cfg = tiny_comp("health_insurance", train_rows=300, test_rows=150)
    real, calls = loop.fit_fold, []

    def spy(data, name, train_idx, valid_idx, *args, **kwargs):
        result = real(data, name, train_idx, valid_idx, *args, **kwargs)
        calls.append((name, len(data.train), data.y.copy(), np.asarray(train_idx), np.asarray(valid_idx), result))
        return result

    monkeypatch.setattr(loop, "fit_fold", spy)
    captured = {}
    import pipeline.cv.pseudo as pseudo

    second = pseudo.second_stage

    def keep_first(data, units, first, *args, **kwargs):
        captured["first"], captured["units"], captured["n"] = first, units, len(data.train)
        return second(data, units, first, *args, **kwargs)

    monkeypatch.setattr(pseudo, "second_stage", keep_first)
    result = run_competition(cfg, HGB + ["train.pseudo_label=0.7"], output_dir=tmp_path / "out", run_name="pl")
    n, first = captured["n"], captured["first"]
    stage1, stage2 = calls[:3], calls[3:]
    assert len(stage2) == 3 and all(c[1] == n for c in stage1)
    info = result.scores["pseudo_label"]
    assert info["threshold"] == 0.7 and sum(info["rows"].values()) > 0
    for unit, (name, rows, y, train_idx, valid_idx, _) in zip(captured["units"], stage2):
        added = train_idx[train_idx >= n]
        assert len(added) == info["rows"][name] == rows - n
        assert not set(train_idx) & set(valid_idx)  # the fold's validation rows are never trained on
        assert np.array_equal(np.sort(train_idx[train_idx < n]), np.sort(unit.train_idx))
        # Labels: the fold's own first-stage prediction, not the run's average over every fold.
        own = fold_test_prediction(next(r for r in first.folds if r.name == name), first.ensemble, unit)
        conf = np.flatnonzero(np.maximum(own, 1 - own) >= 0.7)
        assert np.array_equal(y[n:], (own[conf] >= 0.5).astype(y.dtype))
    # folds/ hold the second stage (what --predict uses); stage1/ the first.
    assert (result.run_dir / "stage1" / "fold_0").is_dir() and (result.run_dir / "folds" / "fold_0").is_dir()
    assert json.loads((result.run_dir / "scores.json").read_text())["pseudo_label"]["stage1_cv"] == info["stage1_cv"]


def test_pseudo_labels_refuse_regression(tiny_comp, tmp_path):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="pseudo_label applies to classification"):
        run_competition(tiny_comp("diamonds"), HGB + ["train.pseudo_label=0.9"], output_dir=tmp_path / "out")


MNIST = ["cv.folds=2", "train.epochs=3", "model.cnn.filters=[8, 16]", "model.cnn.convs_per_block=1",
         "model.cnn.hidden=[16]", "train.batch_size=32", "image.tta.views=[identity]", "diagnostics.report=false",
         "diagnostics.importance=false", "diagnostics.adversarial=false", "image.pretrain=simclr",
         "image.pretrain.epochs=6", "image.pretrain.batch_size=32", "image.pretrain.head_epochs=1"]


@pytest.mark.slow
def test_pretraining_lowers_its_loss_and_every_fold_starts_from_it(tiny_comp, tmp_path, monkeypatch):
    import pipeline.training.fold as fold
    from pipeline.training import pretrain

    cfg = tiny_comp("mnist", train_rows=96, test_rows=32)
    loaded, stages = [], []
    real_load, real_stages = pretrain.load_encoder, fold._stages

    def spy_load(net, name, weights):
        real_load(net, name, weights)
        loaded.append([w.copy() for w in pretrain.encoder(net, name).get_weights()])

    monkeypatch.setattr(pretrain, "load_encoder", spy_load)
    monkeypatch.setattr(fold, "_stages", lambda *a: stages.append(real_stages(*a)) or stages[-1])
    first = run_competition(cfg, MNIST, output_dir=tmp_path / "out", run_name="a")
    info = first.scores["pretrain"]
    assert info["method"] == "simclr" and info["images"] == 128 and info["epochs"] == 6
    assert info["losses"][-1] < info["losses"][0]  # the contrastive loss falls
    # Each fold loads the saved encoder: its weights are exactly the file's.
    from pipeline.models import build_model
    from pipeline.preprocessing.table import InputSpec
    from pipeline.config_files import load_config

    c = load_config(cfg, MNIST)
    ref = pretrain.encoder(build_model("cnn", InputSpec(0, [], (28, 28, 1)), c.model, 10, "multiclass"), "cnn")
    ref.load_weights(info["weights"])
    assert len(loaded) == 2
    for weights in loaded:
        assert all(np.array_equal(a, b) for a, b in zip(weights, ref.get_weights()))
    assert stages[0] == [(1, 0), (2, None)]  # the head alone, then the whole network
    # A second run with the same settings reuses the encoder instead of pretraining again.
    mtime = (tmp_path / "out" / "mnist" / "pretrain").stat().st_mtime_ns
    again = run_competition(cfg, MNIST, output_dir=tmp_path / "out", run_name="b")
    assert again.scores["pretrain"]["sha256"] == info["sha256"]
    assert (tmp_path / "out" / "mnist" / "pretrain").stat().st_mtime_ns == mtime
    assert 0 <= again.scores["cv"] <= 1


def test_pretrain_config_errors():
    from pipeline.config_files import load_config
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="pretrains the encoder of model.name cnn or vit, not mobilenetv2"):
        load_config("mnist", ["model.name=mobilenetv2", "image.pretrain=simclr"])
    with pytest.raises(ConfigError, match=r"image.pretrain.head_epochs \(40\) must be below train.epochs"):
        load_config("mnist", ["image.pretrain=simclr", "image.pretrain.head_epochs=40"])
    # The one-word form and a key after it make one section.
    cfg = load_config("mnist", ["image.pretrain=simclr", "image.pretrain.epochs=5"])
    assert cfg.image.pretrain.method == "simclr" and cfg.image.pretrain.epochs == 5
