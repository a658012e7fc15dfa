"""Cut-down image runs through run_competition: mnist end to end, image + tabular, backbones, and
every bad image input."""
import json
import re

import numpy as np
import pandas as pd
import pytest
import tf_keras as keras

from conftest import cut
from pipeline import run_competition
from pipeline.errors import ConfigError, DataError
from test_end_to_end import check_outputs

pytestmark = pytest.mark.slow

TINY_CNN = ["train.epochs=2", "cv.folds=2", "train.log_every=1", "model.cnn.filters=[8, 16]",
            "model.cnn.convs_per_block=1", "model.cnn.hidden=[16]", "train.batch_size=32"]


def mnist(tiny_comp, train_rows=120, test_rows=40):
    return tiny_comp("mnist", train_rows=train_rows, test_rows=test_rows)


def test_mnist_end_to_end_with_tta(tiny_comp, tmp_path):
    cfg = mnist(tiny_comp)
    result = run_competition(cfg, TINY_CNN + ["train.cutmix_alpha=1.0", "train.mixup_alpha=0.2"],
                             output_dir=tmp_path / "out", run_name="r1")
    scores = check_outputs(result, cfg.parent, ["label"], 120)
    assert scores["metric"] == "accuracy" and 0 <= scores["cv"] <= 1
    assert {"cv_no_tta", "holdout_no_tta", "folds_no_tta", "tta_views"} <= set(scores)
    assert scores["tta_views"] == ["identity", "shift_left", "shift_right", "shift_up", "shift_down"]
    oof = pd.read_csv(result.run_dir / "oof.csv")
    probs = oof[[f"p_{k}" for k in range(10)]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-6)
    assert (oof["label"] == probs.argmax(axis=1)).all()
    sub = pd.read_csv(result.run_dir / "submission.csv")
    assert list(sub.columns) == ["id", "label"] and sub["label"].between(0, 9).all()
    assert not list(result.run_dir.glob("folds/*.cache"))  # decoded caches are not left behind
    # The saved fold model takes the image and reproduces the fold's predictions without TTA.
    fold = result.run_dir / "folds" / "fold_0"
    model = keras.models.load_model(next(fold.glob("*/model_best.keras")))
    assert [i.name for i in model.inputs] == ["image"] and model.inputs[0].shape[1:] == (28, 28, 1)
    saved = np.load(fold / "predictions.npz")
    assert saved["no_tta_oof"].shape[1] == 10
    from pipeline.training import load_fold_predictor

    train = pd.read_csv(cfg.parent / "data" / "train.csv.gz", dtype={"id": str})
    rows = train.iloc[saved["valid_idx"]]
    paths = [str(cfg.parent / "data" / "train" / f"{i}.png") for i in rows["id"]]
    np.testing.assert_allclose(load_fold_predictor(fold)(rows, paths), saved["no_tta_oof"], atol=1e-5)
    # Identity-only TTA is exactly the plain prediction.
    plain = run_competition(cfg, TINY_CNN + ["image.tta.views=[identity]"], output_dir=tmp_path / "out",
                            run_name="r2").scores
    assert plain["cv"] == plain["cv_no_tta"] and plain["holdout"] == plain["holdout_no_tta"]


def test_file_cache_when_the_decoded_set_exceeds_the_budget(tiny_comp, tmp_path):
    cfg = mnist(tiny_comp, 60, 20)
    common = TINY_CNN + ["train.epochs=1", "image.tta.views=[identity]"]
    memory = run_competition(cfg, common, output_dir=tmp_path / "out", run_name="mem").scores
    # 80 images of 28x28 are 62 KB decoded; a 0.01 MB budget sends them to a cache file.
    filed = run_competition(cfg, common + ["image.cache_memory_mb=0.01"], output_dir=tmp_path / "out",
                            run_name="file")
    assert filed.scores["cv"] == memory["cv"] and filed.scores["holdout"] == memory["holdout"]
    assert not list(filed.run_dir.glob("folds/*.cache"))


def test_image_plus_tabular_model(tiny_comp, tmp_path):
    frames = cut("mnist", 120, 40)
    rng = np.random.default_rng(0)
    for key in ("train", "test"):
        n = len(frames[key])
        frames[key] = frames[key].assign(ink=rng.normal(size=n), pen=rng.choice(list("abcdefghijklm"), n))
    cfg = tiny_comp("mnist", frames=frames)
    result = run_competition(cfg, TINY_CNN + ["preprocessing.categorical=embedding", "model.cnn.tabular_hidden=[8]"],
                             output_dir=tmp_path / "out", run_name="r")
    check_outputs(result, cfg.parent, ["label"], 120)
    model = keras.models.load_model(next((result.run_dir / "folds" / "fold_0").glob("*/model_best.keras")))
    assert sorted(i.name for i in model.inputs) == ["cat__pen", "image", "numeric"]
    names = [l.name for l in model.layers]
    assert "emb_cat__pen" in names and "image_tabular" in names and "tab_dense_0" in names


BACKBONE = TINY_CNN + ["model.name=mobilenetv2", "model.backbone.hidden=[16]", "image.size=[32, 32]", "train.epochs=2",
                       "model.backbone.head_epochs=1",
                       "image.tta.views=[identity, hflip]"]


def test_backbone_batchnorm_stays_frozen_and_lr_multiplier(tmp_path):
    from pipeline.config import BackboneConfig
    from pipeline.models.backbones import build_backbone, set_trainable
    from pipeline.preprocessing.table import InputSpec
    from pipeline.training.trainer import Trainer

    from pipeline.models.backbones import make_backbone

    weights = tmp_path / "w.h5"
    make_backbone("mobilenetv2", (32, 32, 3)).save_weights(weights)
    net = build_backbone(InputSpec(0, image=(32, 32, 3)),
                         BackboneConfig(hidden=[], weights=str(weights)), 3, backbone="mobilenetv2")
    trainable = set_trainable(net, None)
    base = net.get_layer("backbone")
    bns = [l for l in base.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert trainable > 0 and bns and not any(l.trainable for l in bns)
    before = [l.moving_mean.numpy().copy() for l in bns]
    weights_before = base.trainable_variables[0].numpy().copy()
    head_before = net.get_layer("head").bias.numpy().copy()
    trainer = Trainer(net, backbone_variables=base.trainable_variables,
                      backbone_optimizer=keras.optimizers.SGD(learning_rate=1e-9))
    trainer.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trainer.build_optimizer()
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    trainer.fit({"image": x}, np.arange(8) % 3, epochs=1, verbose=0)
    for b, l in zip(before, bns):  # inference mode: the moving statistics never moved
        np.testing.assert_array_equal(b, l.moving_mean.numpy())
    # The backbone moved by its tiny learning rate only; the head by the head's.
    np.testing.assert_allclose(weights_before, base.trainable_variables[0].numpy(), atol=1e-6)
    assert np.abs(head_before - net.get_layer("head").bias.numpy()).max() > 1e-3


def test_backbone_weights_file_staged_unfreezing_and_mismatch(tiny_comp, tmp_path):
    """One run (a MobileNetV2 run costs ~50 s here): the weights file, then the head alone for an
    epoch, then the top 20 backbone layers unfrozen."""
    from pipeline.models.backbones import make_backbone

    cfg = mnist(tiny_comp, 48, 16)
    good, wrong = tmp_path / "mobilenetv2_notop.h5", tmp_path / "mobilenetv3_notop.h5"
    source = make_backbone("mobilenetv2", (32, 32, 3))
    source.save_weights(good)
    make_backbone("mobilenetv3small", (32, 32, 3)).save_weights(wrong)
    result = run_competition(cfg, BACKBONE + [f"model.backbone.weights={good}", "model.backbone.head_epochs=1",
                                              "model.backbone.unfreeze=20"], output_dir=tmp_path / "out", run_name="w")
    assert json.loads((result.run_dir / "scores.json").read_text())["cv"] >= 0
    log = (result.run_dir / "run.log").read_text()
    assert "1 epochs with 0 backbone layers trainable" in log  # the head alone
    assert re.search(r"1 epochs with [1-9]\d* backbone layers trainable", log)  # then the top 20 (those with weights)
    # The model started from the file: the backbone's first convolution (frozen: below the top 20
    # layers) is the saved one, where a fresh init would not correlate.
    model = keras.models.load_model(next((result.run_dir / "folds" / "fold_0").glob("*/model_best.keras")))
    assert model.get_layer("gray_to_rgb") is not None and model.get_layer("backbone") is not None
    first = model.get_layer("backbone").get_layer("Conv1").kernel.numpy()
    saved = source.get_layer("Conv1").kernel.numpy()
    assert np.corrcoef(first.ravel(), saved.ravel())[0, 1] > 0.9
    with pytest.raises(ConfigError, match="does not match backbone mobilenetv2"):
        run_competition(cfg, BACKBONE + [f"model.backbone.weights={wrong}"], output_dir=tmp_path / "out", run_name="bad")
    assert not (tmp_path / "out" / "mnist" / "bad").exists()
    with pytest.raises(DataError, match="model.backbone.weights .*file not found"):
        run_competition(cfg, BACKBONE + [f"model.backbone.weights={tmp_path / 'nope.h5'}"], output_dir=tmp_path / "out")


def test_bad_image_inputs(tiny_comp, tmp_path):
    cfg = mnist(tiny_comp, 60, 20)
    data = cfg.parent / "data"
    out = tmp_path / "out"

    def fails(exc, pattern, overrides=()):
        with pytest.raises(exc, match=pattern):
            run_competition(cfg, TINY_CNN + list(overrides), output_dir=out, run_name="bad")
        assert not (out / "mnist" / "bad").exists()  # nothing half-written

    with pytest.raises(ConfigError, match="image.column is set but model.name mlp"):
        run_competition(cfg, ["model.name=mlp"], output_dir=out)
    fails(DataError, r"no column 'file' \(image.column\)", ["image.column=file"])
    fails(DataError, r"labels \['9'\] outside data.classes", ["data.classes=[0,1,2,3,4,5,6,7,8]"])
    first = sorted((data / "train").iterdir())
    for p in first[:4]:
        p.unlink()
    fails(DataError, r"4 of 60 images named in column 'id' are missing \(first: .*train/")
    for p in first[:4]:
        p.write_bytes((data / "train" / first[5].name).read_bytes())
    first[0].write_bytes(b"not an image at all")
    fails(DataError, rf"unreadable or unsupported image file.*{first[0].name}")
    first[0].write_bytes((data / "train" / first[5].name).read_bytes()[:40])  # truncated PNG
    fails(DataError, rf"unreadable or unsupported image file.*{first[0].name}")
