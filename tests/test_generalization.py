"""What a first run does on data nobody tuned for: adaptive rare levels, target encoding without
leakage, numeric embeddings, TabM, count and log-scale targets, the blended GBDT, early stopping
on the metric, and image defaults read from the files."""
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import FAST, cut
from pipeline.config import PreprocessingConfig
from pipeline.preprocessing import TabularPreprocessor
from pipeline.preprocessing.categorical import auto_min_count


# ----------------------------------------------------------------------------- categoricals

def test_auto_min_count_adapts_to_rows_per_level():
    few_rich = np.full(5, 400)  # 5 levels of 400 rows: none is rare
    many_poor = np.r_[np.full(2000, 2), np.full(100, 50)]  # ids seen twice, and some regulars
    assert auto_min_count(few_rich) == 20  # capped: sqrt(400) = 20
    assert auto_min_count(many_poor) == 2
    assert auto_min_count(np.full(1000, 30)) == 5  # sqrt(30) ≈ 5.5 → 5
    assert auto_min_count(np.array([1])) == 2  # never below 2
    assert auto_min_count(np.array([], dtype=int)) == 1


def test_auto_min_count_is_fitted_per_fold_and_pools_rare_levels():
    rng = np.random.default_rng(0)
    # Levels l0..l9 with 100 rows each, then 500 levels seen once: a fold of the first 1000 rows
    # has 10 levels of 100 rows (threshold 10); the whole table adds the singletons (threshold 2).
    col = np.r_[np.repeat([f"l{i}" for i in range(10)], 100), [f"once{i}" for i in range(500)]]
    df = pd.DataFrame({"c": col, "x": rng.normal(size=len(col))})
    columns = {"c": {"type": "categorical"}, "x": {"type": "numeric"}}
    cfg = PreprocessingConfig(categorical="embedding", min_count="auto")
    head = TabularPreprocessor(columns, cfg).fit(df.iloc[:1000])
    whole = TabularPreprocessor(columns, cfg).fit(df)
    assert head.min_counts_["c"] == 10 and whole.min_counts_["c"] == 2
    codes = whole.transform(df)["cat__c"][:, 0]
    assert len(set(codes[1000:])) == 1 and codes[1000] not in set(codes[:1000])  # singletons share the rare code
    assert whole.describe()["min_count"] == {"c": 2}


def test_target_encoding_of_a_noise_column_carries_no_signal_out_of_fold():
    """The canary: a pure-noise column with many levels. Encoded from all of the fold's rows, each
    training row's encoding contains its own label (a leak the model would learn); cross-fitted,
    as the fold's training rows get it, it does not, and on new rows it predicts nothing."""
    rng = np.random.default_rng(0)
    n = 4000
    df = pd.DataFrame({"noise": rng.integers(0, 800, n).astype(str)})  # ~5 rows per level
    y = rng.integers(0, 2, n)
    train, valid = np.arange(3000), np.arange(3000, n)
    pre = TabularPreprocessor({"noise": {"type": "categorical"}}, PreprocessingConfig(categorical="target"),
                              task="binary").fit(df.iloc[train], y[train])
    leaky = pre.transform(df.iloc[train])["numeric"][:, 0]  # what a plain fit-then-transform gives
    crossed = pre.transform(df, train, fit_rows=True)["numeric"][:, 0]
    held = pre.transform(df.iloc[valid])["numeric"][:, 0]
    corr = lambda a, b: float(np.corrcoef(a, b)[0, 1])  # noqa: E731
    assert corr(leaky, y[train]) > 0.3  # the leak exists, so the test can see it
    assert abs(corr(crossed, y[train])) < 0.08
    assert abs(corr(held, y[valid])) < 0.08
    assert not hasattr(pre.__getstate__(), "_fit_rows") and "_fit_rows" not in pre.__getstate__()


def test_target_encoder_needs_labels_and_keeps_integer_regression_targets_continuous():
    df = pd.DataFrame({"c": list("abcab") * 20})
    columns = {"c": {"type": "categorical"}}
    with pytest.raises(ValueError, match="needs the fold's labels"):
        TabularPreprocessor(columns, PreprocessingConfig(categorical="target")).fit(df)
    grades = np.tile([0, 2, 4, 6, 8, 10, 2, 4, 6, 8], 10)  # an ordinal grade scored by RMSE
    pre = TabularPreprocessor(columns, PreprocessingConfig(categorical="target"), task="regression").fit(df, grades)
    assert pre.transform(df)["numeric"].shape == (100, 1)  # one column, not one per "class"


def test_auto_picks_target_encoding_above_target_levels():
    df = pd.DataFrame({"many": [f"m{i % 60}" for i in range(600)], "few": list("abc") * 200})
    cfg = PreprocessingConfig(categorical="auto", target_levels=50)
    pre = TabularPreprocessor({"many": {"type": "categorical"}, "few": {"type": "categorical"}}, cfg,
                              task="regression").fit(df, np.arange(600.0))
    assert pre.encoders_ == {"many": "target", "few": "onehot"}


def test_auto_picks_target_encoding_where_the_typical_level_has_few_rows():
    """movie ids seen twice (median 2 rows per level) get the target encoding; schools of 6 rows
    and users of 40 keep their embedding; the encoding is a continuous input (numeric embeddings)."""
    rng = np.random.default_rng(0)
    sparse = np.r_[np.repeat([f"m{i}" for i in range(300)], 2), [f"s{i}" for i in range(300)]]
    df = pd.DataFrame({"movie": sparse, "school": [f"s{i % 150}" for i in range(900)],
                       "user": [f"u{i % 20}" for i in range(900)], "x": rng.normal(size=900)})
    columns = {"movie": {"type": "categorical"}, "school": {"type": "categorical"},
               "user": {"type": "categorical"}, "x": {"type": "numeric"}}
    y = rng.integers(0, 2, 900)
    pre = TabularPreprocessor(columns, PreprocessingConfig(), task="binary").fit(df, y)
    assert PreprocessingConfig().target_median_rows == 4
    assert pre.encoders_ == {"movie": "target", "school": "embedding", "user": "embedding"}
    assert pre.numeric_dim_ == 2 and pre.input_spec_.continuous == [0, 1]  # x, then movie's encoding
    assert [e[0] for e in pre.input_spec_.embeddings] == ["cat__school", "cat__user"]
    off = TabularPreprocessor(columns, PreprocessingConfig(target_median_rows=None), task="binary").fit(df, y)
    assert off.encoders_["movie"] == "embedding"
    strict = TabularPreprocessor(columns, PreprocessingConfig(target_median_rows=7), task="binary").fit(df, y)
    assert strict.encoders_ == {"movie": "target", "school": "target", "user": "embedding"}


# ----------------------------------------------------------------------------- models

def _spec(numeric_dim=5, continuous=(0, 1, 2)):
    from pipeline.preprocessing import InputSpec

    return InputSpec(numeric_dim, [("cat__c", 4, 3)], continuous=list(continuous))


def _batch(n=32, numeric_dim=5, seed=0):
    rng = np.random.default_rng(seed)
    return {"numeric": rng.normal(size=(n, numeric_dim)).astype("float32"),
            "cat__c": rng.integers(0, 4, (n, 1)).astype("int32")}


def test_periodic_embedding_shapes_and_only_the_scaled_numerics():
    from pipeline.config import MLPConfig
    from pipeline.models import get_builder
    from pipeline.models.layers import PeriodicEmbedding

    layer = PeriodicEmbedding(frequencies=4, dim=6, sigma=0.1)
    assert layer(np.zeros((7, 3), "float32")).shape == (7, 18)
    net = get_builder("mlp")(_spec(), MLPConfig(hidden=[8], numeric_embedding="plr", plr_frequencies=4,
                                                  plr_dim=6), 1, "regression")
    assert net.get_layer("continuous").columns == [0, 1, 2]
    assert net.get_layer("plr").output_shape == (None, 18)
    assert net.get_layer("features").output_shape == (None, 5 + 18 + 3)  # numeric block, PLR, embedding
    regular = get_builder("mlp")(_spec(), MLPConfig(hidden=[8], embedding_dropout=0.3), 1, "regression")
    assert regular.get_layer("emb_dropout_cat__c").rate == 0.3


def test_plr_saves_loads_safely_and_exports_to_tflite(tmp_path):
    import tf_keras as keras

    from pipeline.config import MLPConfig
    from pipeline.export.tflite import convert
    from pipeline.models import get_builder

    net = get_builder("mlp")(_spec(), MLPConfig(hidden=[16], numeric_embedding="plr"), 3, "multiclass")
    x = _batch(8)
    net.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(again.predict(x, verbose=0), net.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=convert(net, "float32"))
    interp.allocate_tensors()
    for d in interp.get_input_details():
        name = next(k for k in x if k in d["name"])
        interp.resize_tensor_input(d["index"], x[name].shape)
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], x[next(k for k in x if k in d["name"])])
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, net.predict(x, verbose=0), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- targets

def _counts_comp(tiny_comp):
    """diamonds with its price turned into a count-like target (whole, non-negative, skewed)."""
    frames = cut("diamonds", 300, 80)
    rng = np.random.default_rng(0)
    for key, rows in (("train", "train"), ("solution", "test")):  # events per row: a long right tail
        carat = frames[rows].set_index("id").loc[frames[key]["id"], "carat"].to_numpy()
        frames[key] = frames[key].assign(price=rng.poisson(np.exp(2 * carat + rng.normal(0, 0.5, len(carat)))))
    return tiny_comp("diamonds", frames=frames)


@pytest.mark.slow
def test_count_targets_get_a_poisson_loss_and_positive_predictions(tiny_comp, tmp_path):
    from pipeline import run_competition

    cfg = _counts_comp(tiny_comp)
    result = run_competition(cfg, FAST + ["preprocessing.target_clip=false"], output_dir=tmp_path, run_name="counts")
    resolved = yaml.safe_load(result.files["config"].read_text())
    assert resolved["train"]["loss"] == "poisson" and resolved["preprocessing"]["target_log1p"] is False
    preds = pd.read_csv(result.run_dir / "test_pred.csv")["price"]
    assert (preds > 0).all()  # the log link: positive even unclipped


def test_log_scale_metric_trains_on_log1p_and_mse_stays_for_other_targets(tiny_comp, tmp_path):
    from pipeline.config_files import load_config
    from pipeline.data import load_competition

    cfg = tiny_comp("diamonds")
    rmsle = load_competition(load_config(cfg, ["metric=rmsle"])).cfg
    assert rmsle.preprocessing.target_log1p is True and rmsle.train.loss == "mse"
    chosen = load_competition(load_config(cfg, ["preprocessing.target_log1p=false", "train.loss=mse"])).cfg
    assert chosen.preprocessing.target_log1p is False and chosen.train.loss == "mse"


def test_poisson_refuses_negative_targets(tiny_comp):
    from pipeline.config_files import load_config
    from pipeline.data import load_competition
    from pipeline.errors import ConfigError

    frames = cut("diamonds", 100, 30)
    frames["train"] = frames["train"].assign(price=frames["train"]["price"] - 1000)
    with pytest.raises(ConfigError, match="train.loss=poisson needs a regression target >= 0"):
        load_competition(load_config(tiny_comp("diamonds", frames=frames), ["train.loss=poisson"]))


# ----------------------------------------------------------------------------- monitor
# (the members and their ensemble: test_ensemble.py)

def test_early_stopping_and_best_weights_watch_the_metric():
    from pipeline.config import TrainConfig
    from pipeline.training.callbacks import SCORE_KEY, History, Snapshots, make_callbacks, monitor_key

    assert monitor_key(TrainConfig()) == SCORE_KEY
    assert monitor_key(TrainConfig(monitor="loss")) == "val_loss"
    assert monitor_key(TrainConfig(ema=True)) == "val_loss"
    assert monitor_key(TrainConfig(history_metric=False)) == "val_loss"
    with pytest.raises(ValueError, match="train.monitor=metric needs"):
        TrainConfig(monitor="metric", history_metric=False)

    class Net:  # the two methods Snapshots uses
        def __init__(self):
            self.w = [np.zeros(1)]

        def get_weights(self):
            return [w.copy() for w in self.w]

    net = Net()
    # AUC rises while the loss rises too (the calibration worsens): "best" must follow the AUC.
    aucs, losses = [0.70, 0.80, 0.75], [0.50, 0.55, 0.60]
    history = History(validate=lambda _: (losses[len(history.rows)], aucs[len(history.rows)]), sign=-1.0)
    snaps = Snapshots(net)
    cbs = make_callbacks(TrainConfig(), "t", constant_lr=True, log_every=1, snapshots=snaps, history=history)
    assert cbs[0] is history and cbs[1] is snaps
    early = next(cb for cb in cbs if type(cb).__name__ == "EarlyStopping")
    assert early.monitor == SCORE_KEY

    class Opt:
        learning_rate = 1e-3

    class Model:
        optimizer = Opt()

    history.model = Model()
    history.on_train_begin()
    for epoch, loss in enumerate(losses):
        net.w = [np.full(1, float(epoch))]
        logs = {"loss": 0.1}
        history.on_epoch_end(epoch, logs)
        assert logs["val_loss"] == loss
        snaps.on_epoch_end(epoch, logs)
    assert snaps.best_epoch == 2 and snaps.best[0][0] == 1.0


# ----------------------------------------------------------------------------- images

def _write_images(folder, names, size, mode):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new(mode, (size[1], size[0]), color=(i * 7) % 255 if mode == "L" else (i, 2 * i, 3 * i)).save(
            folder / name)


@pytest.mark.parametrize("size, mode, expected_size, expected_channels", [
    ((12, 10), "L", [12, 10], 1),  # small grayscale digits keep their size and one channel
    ((600, 400), "RGB", [224, 149], 3),  # large photos: the longer side capped at 224, aspect kept
])
def test_image_defaults_come_from_the_files(tmp_path, size, mode, expected_size, expected_channels):
    from pipeline.config_files import load_config
    from pipeline.data import load_competition

    names = [f"{i}.png" for i in range(12)]
    _write_images(tmp_path / "data" / "train", names[:8], size, mode)
    _write_images(tmp_path / "data" / "test", names[8:], size, mode)
    data_dir = tmp_path / "data"
    pd.DataFrame({"id": names[:8], "label": ["a", "b"] * 4}).to_csv(data_dir / "train.csv", index=False)
    pd.DataFrame({"id": names[8:]}).to_csv(data_dir / "test.csv", index=False)
    pd.DataFrame({"id": names[8:], "label": "a"}).to_csv(data_dir / "sample_submission.csv", index=False)
    (tmp_path / "config.yaml").write_text("data: {target: label}\nimage: {column: id}\n")
    cfg = load_competition(load_config(tmp_path / "config.yaml")).cfg
    assert cfg.model.name == "cnn" and cfg.image.size == expected_size and cfg.image.channels == expected_channels
    named = load_competition(load_config(tmp_path / "config.yaml", ["model.name=mobilenetv2", "image.size=[32, 32]",
                                                                     "image.channels=3"])).cfg
    assert named.model.name == "mobilenetv2" and named.image.size == [32, 32] and named.image.channels == 3
