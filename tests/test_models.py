import inspect
import numpy as np
import pytest

from pipeline.training.trainer import Trainer
from pipeline.config import MLPConfig, ModelConfig, TrainConfig
import dataclasses

from pipeline.models import BACKBONES, IMAGE_MODELS, MODELS, build_model, get_builder
from pipeline.models.sklearn_models import MATRIX_MODELS
from pipeline.models.heads import make_loss, output_size, to_prediction
from pipeline.preprocessing.table import InputSpec
from pipeline.training.schedules import make_schedule

SPEC = InputSpec(numeric_dim=5, embeddings=[("cat__a", 4, 3), ("cat__b", 10, 6)])


IMAGE_SPEC = dataclasses.replace(SPEC, image=(32, 32, 1))  # image + tabular; grayscale into backbones


def batch(n=8, image=False):
    rng = np.random.default_rng(0)
    out = {"numeric": rng.normal(size=(n, 5)).astype("float32"),
           "cat__a": rng.integers(0, 4, (n, 1)).astype("int32"),
           "cat__b": rng.integers(0, 10, (n, 1)).astype("int32")}
    if image:
        out["image"] = rng.uniform(0, 255, (n, 32, 32, 1)).astype("float32")
    return out


TASKS = [("regression", 0), ("binary", 2), ("multiclass", 3)]
# Backbones share the image head with the CNN: one task each keeps the suite fast.
# Keras builders; the scikit-learn members (hgb, linear) are tested through the CV in test_stacking.
CASES = [(name, *task) for name in MODELS if name not in set(BACKBONES) | MATRIX_MODELS for task in TASKS]
CASES += [(name, "multiclass", 3) for name in BACKBONES]


@pytest.mark.parametrize("name, task, n_classes", CASES)
def test_every_model_builds_and_trains_one_step(name, task, n_classes):
    image = name in IMAGE_MODELS
    cfg = ModelConfig(name=name, mlp={"hidden": [8, 4]}, cnn={"hidden": [8, 4], "filters": [8, 16]},
                      vit={"hidden": [8], "dim": 16, "depth": 1, "heads": 2, "stem": [8]},
                      backbone={"hidden": [8, 4]}, realmlp={"hidden": [8, 4]},
                      tabm={"hidden": [8], "k": 2, "bins": 4})
    model = build_model(name, IMAGE_SPEC if image else SPEC, cfg, output_size(task, n_classes), task)
    if name in BACKBONES:  # training steps of backbones run in test_image_runs; here the build and a forward pass
        out = model(batch(image=True), training=False)
        assert np.isfinite(out.numpy()).all() and out.shape == (8, n_classes) and out.dtype == "float32"
        return
    trainer = Trainer(model)  # as the pipeline trains: an ensemble's members each get the loss
    trainer.compile("adam", loss=make_loss(task))
    y = np.zeros(8, dtype="float32" if task == "regression" else "int32")
    loss = trainer.train_on_batch(batch(image=image), y)
    assert np.isfinite(loss) and model.output_shape == (None, max(1, n_classes if task == "multiclass" else 1))
    assert model.output.dtype == "float32"


@pytest.mark.parametrize("norm, layer", [("batch", "BatchNormalization"), ("layer", "LayerNormalization"), ("none", None)])
def test_mlp_options(norm, layer):
    model = get_builder("mlp")(SPEC, MLPConfig(hidden=[8, 8, 4], norm=norm, dropout=0.2,
                                                 activation="gelu", initializer="glorot_uniform"), 1)
    kinds = [type(l).__name__ for l in model.layers]
    assert kinds.count("Dense") == 4 and kinds.count("Dropout") == 3
    assert kinds.count(layer) == 3 if layer else not {"BatchNormalization", "LayerNormalization"} & set(kinds)
    assert [l.output_dim for l in model.layers if type(l).__name__ == "Embedding"] == [3, 6]
    assert model.get_layer("dense_0").kernel_initializer.__class__.__name__ == "GlorotUniform"


def test_heads_turn_logits_into_predictions():
    np.testing.assert_allclose(to_prediction(np.array([[0.0], [100.0]]), "binary"), [0.5, 1.0])
    p = to_prediction(np.array([[1.0, 1.0, 1.0]]), "multiclass")
    np.testing.assert_allclose(p, [[1 / 3] * 3])
    assert to_prediction(np.array([[2.5]]), "regression").tolist() == [2.5]


def test_schedules_follow_the_documented_curve():
    assert make_schedule(TrainConfig(lr=0.01), 10) == 0.01
    cos = make_schedule(TrainConfig(lr=0.01, schedule="cosine", epochs=10, warmup_epochs=2), 10)
    lrs = [float(cos(s)) for s in (0, 10, 20, 60, 99)]
    assert lrs[0] == pytest.approx(0.01 / 25) and lrs[2] == pytest.approx(0.01)
    assert lrs[0] < lrs[1] < lrs[2] > lrs[3] > lrs[4] and lrs[4] < 1e-4
    flat = make_schedule(TrainConfig(lr=0.01, schedule="constant", epochs=10, warmup_epochs=1), 10)
    assert float(flat(0)) == pytest.approx(0.0004) and float(flat(50)) == pytest.approx(0.01)


def test_frequent_codes_keeps_the_254_most_frequent_levels_and_pools_the_rest():
    from pipeline.models.sklearn_models import HGB_MAX_CATEGORIES, frequent_codes

    rng = np.random.default_rng(0)
    codes = np.minimum(rng.zipf(1.3, size=20_000), 999)  # 1,000 codes, Zipf-frequent; 0 never seen
    lookup = frequent_codes(codes, 1000)
    assert lookup.shape == (1000,) and lookup.max() == HGB_MAX_CATEGORIES - 1
    counts = np.bincount(codes, minlength=1000)
    kept = np.flatnonzero(lookup < HGB_MAX_CATEGORIES - 1)
    assert len(kept) == HGB_MAX_CATEGORIES - 1
    # every kept level is at least as frequent as every pooled one, and the most frequent gets 0
    assert counts[kept].min() >= counts[lookup == HGB_MAX_CATEGORIES - 1].max()
    assert lookup[np.argmax(counts)] == 0
    assert lookup[0] == HGB_MAX_CATEGORIES - 1  # unseen in training: pooled


def test_hgb_splits_a_column_of_thousands_of_levels_as_categories(tmp_path):
    """A 2,000-level column whose signal is a set of levels scattered through the code order:
    as plain codes HGB needs many splits; as (capped) categories it is one split. The member
    saves the lookup and predicts loaded rows as it did after fit."""
    from types import SimpleNamespace

    from pipeline.preprocessing.table import InputSpec
    from pipeline.training.members import FoldModel, SklearnMember

    rng = np.random.default_rng(1)
    n, levels = 6000, 2000
    code = rng.integers(1, 200, size=n) * 10  # 199 frequent levels spread over 10..1990
    rare = rng.random(n) < 0.2
    code[rare] = rng.integers(1, levels, size=rare.sum())  # and a tail of rare ones
    good = (code // 10) % 7 == 0
    y = (good ^ (rng.random(n) < 0.1)).astype(int)
    x = {"numeric": rng.normal(size=(n, 2)).astype(np.float32), "cat__c": code.reshape(-1, 1).astype(np.int32)}
    split = lambda rows: {k: v[rows] for k, v in x.items()}  # noqa: E731
    tr, va = np.arange(4000), np.arange(4000, n)
    fold = SimpleNamespace(inputs=SimpleNamespace(x={"train": split(tr), "valid": split(va), "test": split(va)}),
                           pre=SimpleNamespace(input_spec_=InputSpec(2, [("cat__c", levels, 8)])),
                           y_train=y[tr], seed=0)
    member = SklearnMember("hgb", "binary", {"max_iter": 50}, None, False)
    fit = member.fit(fold)
    assert list(member.lookups) == [2] and member.model.is_categorical_[2]
    accuracy = ((fit.oof > 0.5) == y[va]).mean()
    assert accuracy > 0.85, accuracy
    member.save(tmp_path)
    loaded = FoldModel.load(tmp_path)
    np.testing.assert_allclose(loaded.predict(split(va)), fit.oof)


@pytest.mark.parametrize("task", ["regression", "poisson", "binary", "multiclass"])
def test_hgb_fits_a_float32_matrix_and_its_own_early_stopping_rows_as_it_split_them_itself(task):
    """The HGB member hands scikit-learn a float32 matrix and, where scikit-learn takes X_val
    (1.7+), the rows HGB's early stopping holds out as views of it (its split replayed): the
    same trees and predictions, to the bit, as the float64 matrix it used to get whole, which
    HGB then split and copied itself. On scikit-learn 1.6 HGB splits itself, as before."""
    from types import SimpleNamespace

    from sklearn.ensemble import HistGradientBoostingRegressor

    from pipeline.models.sklearn_models import build_sklearn, hgb_validation_rows
    from pipeline.preprocessing.table import InputSpec
    from pipeline.training.members import SKLEARN_DEFAULTS, SklearnMember

    rng = np.random.default_rng(5)
    n = 3000
    x = {"numeric": rng.normal(size=(n, 3)).astype(np.float32),
         "cat__a": rng.integers(0, 12, size=(n, 1)).astype(np.int32),
         "cat__b": rng.integers(0, 600, size=(n, 1)).astype(np.int32)}  # remapped to 255 codes
    signal = x["numeric"][:, 0] + (x["cat__a"][:, 0] % 3 == 0) + (x["cat__b"][:, 0] % 7 == 0)
    y = {"regression": signal + rng.normal(size=n), "poisson": rng.poisson(np.exp(signal / 2)).astype(float),
         "binary": (signal + rng.normal(size=n) > 0.8).astype(int),
         "multiclass": np.digitize(signal + rng.normal(size=n), [0.0, 1.0])}[task]
    kind = "regression" if task == "poisson" else task
    tr, va = np.arange(2400), np.arange(2400, n)
    split = lambda rows: {k: v[rows] for k, v in x.items()}  # noqa: E731
    spec = InputSpec(3, [("cat__a", 12, 8), ("cat__b", 600, 8)])
    fold = SimpleNamespace(inputs=SimpleNamespace(x={"train": split(tr), "valid": split(va), "test": split(va)}),
                           pre=SimpleNamespace(input_spec_=spec), y_train=y[tr], seed=4)
    member = SklearnMember("hgb", kind, SKLEARN_DEFAULTS["hgb"], "poisson" if task == "poisson" else None, False)
    fit = member.fit(fold)

    # Before: the float64 matrix in the fold's order, HGB's own split (validation_fraction).
    wide = np.hstack([x["numeric"], x["cat__a"], x["cat__b"]]).astype(np.float64)
    wide[:, 4] = member.lookups[4][wide[:, 4].astype(np.int64)]
    before = build_sklearn("hgb", kind, SKLEARN_DEFAULTS["hgb"], [3, 4], {3: 12, 4: 255}, 4, poisson=task == "poisson")
    before.fit(wide[tr], y[tr])
    assert before.n_iter_ < SKLEARN_DEFAULTS["hgb"]["max_iter"]  # early stopping ended it
    assert member.model.n_iter_ == before.n_iter_
    expected = before.predict(wide[va]) if kind == "regression" else before.predict_proba(wide[va])
    np.testing.assert_array_equal(fit.oof, expected[:, 1] if kind == "binary" else expected)
    takes_x_val = "X_val" in inspect.signature(HistGradientBoostingRegressor.fit).parameters
    assert (hgb_validation_rows(y[tr], kind, SKLEARN_DEFAULTS["hgb"], 4) is not None) == takes_x_val


def test_hgb_validation_rows_follow_early_stopping_as_hgb_decides_it():
    from sklearn.ensemble import HistGradientBoostingRegressor

    from pipeline.models.sklearn_models import hgb_validation_rows

    if "X_val" not in inspect.signature(HistGradientBoostingRegressor.fit).parameters:
        pytest.skip("scikit-learn < 1.7 splits itself")
    y = np.arange(20_000) % 3
    assert hgb_validation_rows(y, "multiclass", {"early_stopping": False}, 0) is None
    assert hgb_validation_rows(y, "multiclass", {"early_stopping": True, "validation_fraction": None}, 0) is None
    assert hgb_validation_rows(y[:10_000], "multiclass", {}, 0) is None  # "auto": off at 10,000 rows
    assert hgb_validation_rows(y, "multiclass", {"class_weight": "balanced"}, 0) is None  # HGB weighs its own split
    fit, held_out = hgb_validation_rows(y, "multiclass", {}, 0)  # "auto": on above
    assert len(held_out) == 2000 and np.array_equal(np.sort(np.concatenate([fit, held_out])), np.arange(20_000))
    assert np.bincount(y[held_out]).tolist() == [667, 667, 666]  # stratified
