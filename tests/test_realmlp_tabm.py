"""RealMLP-TD and TabM as their authors train them (pipeline/models/realmlp.py, models/tabm.py,
training/recipes.py, the FactorAdam optimizer and the coslog4 schedule)."""
import numpy as np
import pytest

from pipeline.config import ModelConfig, RealMLPConfig, TabMConfig
from pipeline.preprocessing import InputSpec

SPEC = InputSpec(6, [("cat__c", 12, 5)], continuous=[0, 1, 2, 3])
DATA = {"data": {"id": "id", "target": "y"}}


def _batch(n=64, seed=0):
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, 6)).astype("float32")
    numeric[:, 4:] = rng.integers(0, 2, (n, 2))  # one-hot / indicator columns
    numeric[:, 1] = np.exp(2 * numeric[:, 1])  # a heavy tail
    return {"numeric": numeric, "cat__c": rng.integers(0, 12, (n, 1)).astype("int32")}


def _built(name, section, outputs=1, task="regression", n=256):
    from pipeline.models import build_model
    from pipeline.models.layers import adapt_layers

    net = build_model(name, SPEC, ModelConfig(**{name: section}), outputs, task)
    x = _batch(n)
    adapted = adapt_layers(net, x)
    # RealMLP: the scaling, the hidden NTK layers and the head; TabM: its bins, when the numerics are embedded
    expected = 2 + len(section.hidden) if name == "realmlp" else int(section.numeric_embedding == "ple")
    assert adapted == expected
    return net, x


def test_a_layers_input_computed_by_row_slices_adapts_it_as_the_whole_array_does():
    """adapt_layers hands each layer a LayerInput, which runs the layers before it only for the
    rows sliced (RealMLP's NTK layers take 2,048 at a time): the same values, the same weights."""
    import tf_keras as keras

    from pipeline.models.layers import LayerInput

    net, x = _built("realmlp", RealMLPConfig(hidden=[16, 16, 16]), n=700)
    layer = net.get_layer("ntk_dense_0")  # its input: PBLD, the indicators and the embedding side by side
    upstream = keras.Model(net.inputs, layer.input)
    lazy = LayerInput(upstream, x, batch_size=128)
    whole = upstream(x, training=False).numpy()
    assert len(lazy) == 700
    np.testing.assert_allclose(lazy[100:450], whole[100:450], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(lazy), whole, rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="slice it"):
        lazy[np.array([1, 2])]
    start = [w.numpy() for w in layer.weights]
    layer.adapt_to(lazy, np.random.default_rng(3))
    by_slices = [w.numpy() for w in layer.weights]
    for w, v in zip(layer.weights, start):
        w.assign(v)
    layer.adapt_to(np.asarray(lazy), np.random.default_rng(3))
    for a, b in zip(by_slices, layer.weights):
        np.testing.assert_array_equal(a, b.numpy())


@pytest.mark.parametrize("task, outputs, act", [("regression", 1, "mish"), ("binary", 1, "selu"),
                                                ("multiclass", 3, "selu")])
def test_realmlp_shapes_and_the_authors_layers(task, outputs, act):
    net, x = _built("realmlp", RealMLPConfig(hidden=[16, 16, 16]), outputs, task)
    assert net.predict(x, verbose=0).shape == (64 * 4, outputs)
    # PBLD on the 4 continuous columns: 3 linear outputs each and the value itself; the 2
    # indicator columns as they are; the categorical in 8 dimensions.
    assert net.get_layer("pbld").output_shape == (None, 4 * 3 + 4)
    assert net.get_layer("indicators").columns == [4, 5]
    assert net.get_layer("emb_cat__c").output_dim == 8
    assert net.get_layer("features").output_shape == (None, 16 + 2 + 8)
    assert [net.get_layer(f"act_{i}").activation for i in range(3)] == [act] * 3
    assert [type(l).__name__ for l in net.layers].count("NTKDense") == 4  # 3 hidden and the head


def test_mish_with_one_exp_is_mish_and_its_gradient_in_every_dtype():
    import tensorflow as tf

    from pipeline.models.realmlp import _mish_for_training as _mish

    x = np.concatenate([np.linspace(-120, 120, 4001), [-1e4, -88.5, -0.0, 1e-7, 19.99, 20.01, 1e4]])
    ref = x * np.tanh(np.logaddexp(0.0, x))  # float64: softplus without overflow
    sp = np.logaddexp(0.0, x)
    ref_grad = np.tanh(sp) + x * (1 - np.tanh(sp) ** 2) / (1 + np.exp(-np.clip(x, -700, 700)))
    xt = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = _mish(xt)
    g = tape.gradient(y, xt).numpy()
    assert np.isfinite(y.numpy()).all() and np.isfinite(g).all()
    np.testing.assert_allclose(y.numpy(), ref, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(g, ref_grad, rtol=2e-6, atol=2e-6)
    grid = np.linspace(-8, 8, 33)  # e^20 overflows float16: computed in float32, then cast
    half = _mish(tf.constant(grid, tf.float16))
    assert half.dtype == tf.float16
    np.testing.assert_allclose(half.numpy().astype(float), grid * np.tanh(np.logaddexp(0.0, grid)), rtol=2e-3, atol=2e-3)


def test_parametric_mish_trains_with_the_written_out_form_and_serves_the_composed_one():
    import tensorflow as tf

    from pipeline.models.realmlp import ParametricActivation

    layer = ParametricActivation("mish")
    x = tf.constant(np.linspace(-30, 30, 601, dtype=np.float32)[None, :])
    layer.build(x.shape)
    layer.a.assign(np.full(601, 0.7, "float32"))
    trained, served = layer(x, training=True), layer(x, training=False)
    np.testing.assert_allclose(trained.numpy(), served.numpy(), rtol=2e-6, atol=2e-6)
    graph = tf.function(lambda v: layer(v, training=False)).get_concrete_function(x).graph
    ops = {op.type for op in graph.get_operations()}
    assert {"Softplus", "Tanh"} <= ops and "Exp" not in ops  # what the INT8 export quantizes


def test_realmlp_robust_scaling_and_smooth_clipping():
    from pipeline.models.realmlp import RobustScaleClip

    layer = RobustScaleClip()
    x = np.column_stack([np.arange(101.0), np.r_[np.zeros(100), 10.0], np.full(101, 7.0)]).astype("float32")
    layer.build(x.shape)
    layer.adapt_to(x)
    # median 50, IQR 50; a zero IQR falls back to half the range (factor 1/5); a constant column is 0.
    np.testing.assert_allclose(layer.center.numpy(), [50, 0, 7])
    np.testing.assert_allclose(layer.factor.numpy(), [1 / 50, 1 / 5, 0], rtol=1e-6)
    out = layer(np.array([[100.0, 1e6, 7.0]], "float32")).numpy()
    np.testing.assert_allclose(out[0, 0], 1 / np.sqrt(1 + 1 / 9), rtol=1e-5)  # z = 1
    assert 2.99 < out[0, 1] <= 3.0 and out[0, 2] == 0.0  # smooth clipping bounds |x| by 3


def test_realmlp_ntk_layers_start_with_unit_spread_and_data_placed_biases():
    import tf_keras as keras

    net, x = _built("realmlp", RealMLPConfig(hidden=[32, 32, 32]), n=512)
    layer = net.get_layer("ntk_dense_1")
    upstream = keras.Model(net.inputs, layer.input).predict(x, verbose=0)
    pre = upstream @ layer.kernel.numpy() * layer.gain
    np.testing.assert_allclose(pre.std(axis=0), 1.0, rtol=1e-3)
    pre = pre + layer.bias.numpy()
    # he+5: each bias is minus a convex combination of rows, so every unit's kink lies inside the data
    assert ((pre.min(axis=0) < 0) & (pre.max(axis=0) > 0)).all()


def test_an_ntk_layer_adapted_by_blocks_of_rows_gets_the_whole_matrixs_weights_to_the_last_bit():
    """NTKDense.adapt_to streams its pre-activations in blocks of 2,048 rows, twice, rather than
    holding them whole: the weights equal those of the definition computed on the whole matrix
    (mean, standard deviation, biases from 5 random rows each), for sizes around the block's."""
    import tf_keras as keras

    from pipeline.models.realmlp import NTKDense

    def whole(layer, x, rng):
        w = layer.kernel.numpy().astype(np.float64)
        pre = x.astype(np.float64) @ w
        pre *= layer.gain
        std = np.sqrt(np.square(pre - pre.mean(axis=0)).sum(axis=0) / len(pre))
        std = np.where(std > 0, std, 1.0)
        rows = rng.integers(0, len(pre), size=(layer.units, 5))
        weights = rng.exponential(1.0, size=(layer.units, 5))
        weights /= weights.sum(axis=1, keepdims=True)
        bias = -(pre[rows, np.arange(layer.units)[:, None]] / std[:, None] * weights).sum(axis=1)
        return (w / std).astype(np.float32), bias.astype(np.float32)

    for n in (5000, 2048, 300):
        x = (np.random.default_rng(n).normal(size=(n, 12)) * 3 + 1).astype(np.float32)
        x[:, 4] = 2.0  # a constant column
        keras.utils.set_random_seed(0)
        layer = NTKDense(24)
        layer.build((None, 12))
        kernel, bias = whole(layer, x, np.random.default_rng(5))
        layer.adapt_to(x, np.random.default_rng(5))
        np.testing.assert_array_equal(layer.kernel.numpy(), kernel)
        np.testing.assert_array_equal(layer.bias.numpy(), bias)


def test_factor_adam_scales_each_parameter_group_and_decays_on_a_flat_cosine():
    import tensorflow as tf

    from pipeline.training.optimizers import FactorAdam

    a, b = tf.Variable([1.0], name="group_a"), tf.Variable([1.0], name="group_b")
    opt = FactorAdam(learning_rate=0.01, weight_decay=0.0, factors={"group_b": (0.1, 0.0)})
    opt.apply_gradients([(tf.constant([1.0]), a), (tf.constant([1.0]), b)])
    # Adam's first step is lr * sign(g) whatever |g|: the factor scales the step itself.
    np.testing.assert_allclose([1 - a.numpy()[0], 1 - b.numpy()[0]], [0.01, 0.001], rtol=1e-3)
    w = tf.Variable([2.0], name="decayed")
    opt = FactorAdam(learning_rate=0.5, weight_decay=0.1, total_steps=4)
    opt.apply_gradients([(tf.constant([0.0]), w)])  # no gradient: only the decoupled decay moves it
    np.testing.assert_allclose(w.numpy(), [2.0 * (1 - 0.1 * 0.5)], rtol=1e-6)
    for _ in range(3):
        opt.apply_gradients([(tf.constant([0.0]), w)])
    # steps 2, 3, 4 at progress 1/4 (flat: 1), 1/2 (cos: 1), 3/4 (0.5)
    np.testing.assert_allclose(w.numpy(), [2.0 * 0.95 ** 3 * (1 - 0.1 * 0.5 * 0.5)], rtol=1e-5)


@pytest.mark.parametrize("strategy, fused", [(False, True), (False, False), (True, True)])
def test_factor_adam_in_a_traced_step_matches_adam_written_out(strategy, fused):
    """The step's shared values (learning rate, bias corrections, decay) are built once per traced
    step: each step of a tf.function must still see its own. Without a tf.distribute strategy the
    step is TensorFlow's fused Adam kernel, under one the same step in plain ops: both are Adam."""
    import contextlib

    import tensorflow as tf

    from pipeline.training.optimizers import FactorAdam

    lr, b1, b2, eps, wd, total = 0.05, 0.9, 0.95, 1e-8, 0.1, 6
    factors = {"slow": (0.3, 0.5)}
    dist = tf.distribute.OneDeviceStrategy("/cpu:0") if strategy else None
    with dist.scope() if dist else contextlib.nullcontext():
        ws = {"fast": tf.Variable([1.0, -2.0], name="fast"), "slow": tf.Variable([0.5, 3.0], name="slow")}
        opt = FactorAdam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps, weight_decay=wd, total_steps=total,
                         factors=factors, fused=fused)

    def apply():
        opt.apply_gradients([(w * w - 0.5, w) for w in ws.values()])

    @tf.function
    def step():
        dist.run(apply) if dist else apply()

    ref = {k: v.numpy().astype(np.float64) for k, v in ws.items()}
    moments = {k: (np.zeros(2), np.zeros(2)) for k in ws}
    for t in range(1, total + 1):
        step()
        progress = (t - 1) / total
        flat = 1.0 if progress < 0.5 else 0.5 * (1 + np.cos(np.pi * (2 * progress - 1)))
        for k, w in ref.items():
            f_lr, f_wd = factors.get(k, (1.0, 1.0))
            g = w * w - 0.5
            w = w * (1 - wd * f_wd * flat * lr * f_lr)
            m, v = moments[k]
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            moments[k] = m, v
            ref[k] = w - lr * f_lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        for k in ws:
            np.testing.assert_allclose(ws[k].numpy(), ref[k], rtol=2e-5, err_msg=f"{k}, step {t}")


def test_coslog4_schedule_and_flat_cosine():
    from pipeline.training.schedules import Coslog, flat_cos

    s = Coslog(0.04, total=1500)
    # four cycles on a log axis: zeros at t = 0, 1/15, 3/15, 7/15, 1; peaks between
    for step in (0, 100, 300, 700, 1500):
        assert float(s(step)) == pytest.approx(0.0, abs=1e-6)
    t_peak = (2 ** 0.5 - 1) / 15  # log2(1 + 15 t) = 0.5
    assert float(s(int(round(t_peak * 1500)))) == pytest.approx(0.04, rel=1e-2)
    assert [float(flat_cos(t)) for t in (0.0, 0.49, 0.75, 1.0)] == pytest.approx([1, 1, 0.5, 0], abs=1e-6)


@pytest.mark.parametrize("metric, task, smoothing", [("accuracy", "multiclass", 0.1), ("f1", "binary", 0.1),
                                                     ("auc", "binary", 0.0), ("logloss", "multiclass", 0.0)])
def test_realmlp_recipe_smooths_labels_only_for_hard_label_metrics(metric, task, smoothing):
    from pipeline.config import validate
    from pipeline.training.recipes import lr_setting, member_config

    cfg = validate({**DATA, "task": task, "metric": metric, "train": {"epochs": 7, "seeds": 2}}, "test")
    member = member_config(cfg, "realmlp", task).train
    assert member.label_smoothing == smoothing
    assert (member.optimizer, member.schedule, member.lr, member.beta_2) == ("realmlp", "coslog4", 0.04, 0.95)
    assert member.epochs == 32 and member.seeds == 2  # run-wide parts stay
    assert member.early_stopping is None  # every epoch; model.realmlp.early_stopping turns the authors' rule on
    assert member_config(cfg, "mlp", task).train.epochs == 7
    # a diverging member's error names the setting that owns its learning rate
    assert (lr_setting("realmlp"), lr_setting("tabm"), lr_setting("mlp")) == ("model.realmlp.lr", "model.tabm.lr", "train.lr")
    tabm = member_config(cfg, "tabm", task).train
    assert (tabm.optimizer, tabm.lr, tabm.weight_decay, tabm.early_stopping) == ("adamw", 2e-3, 3e-4, 16)


def test_realmlp_early_stopping_stops_once_the_next_epoch_would_pass_twice_the_best_plus_three():
    from types import SimpleNamespace

    from pipeline.config import validate
    from pipeline.training.callbacks import Snapshots, StopAfterBest, make_callbacks
    from pipeline.training.recipes import member_config

    def stopped_after(best_epochs, factor=2.0, extra=3):
        snapshots = SimpleNamespace(best_epoch=0)
        stop = StopAfterBest(snapshots, factor, extra)
        stop.model = SimpleNamespace(stop_training=False)
        for epoch, best in enumerate(best_epochs):  # the best epoch so far, after each epoch
            snapshots.best_epoch = best
            stop.on_epoch_end(epoch)
            if stop.model.stop_training:
                return epoch + 1  # stopped after this epoch (1-based)
        return None

    # Best at epoch 6 (coslog4's second cycle ends at 6.4 of 32): epochs up to 15 are seen (the third
    # cycle ends at 14.9), and training stops after the 15th.
    assert stopped_after([1, 2, 2, 2, 2, 6] + [6] * 26) == 15
    # A new best moves the bound: best 6, then 12 at epoch 12 -> up to 27.
    assert stopped_after([1, 2, 2, 2, 2, 6, 6, 6, 6, 6, 6, 12] + [12] * 20) == 27
    # A best at the third cycle's end (15) never stops 32 epochs; factor 1 is a plain patience.
    assert stopped_after(list(range(1, 16)) + [15] * 17) is None
    assert stopped_after([1, 2, 3] + [3] * 10, factor=1.0, extra=4) == 7
    assert stopped_after([0, 0, 0, 0, 0, 0, 0, 0]) is None  # no finite score yet

    cfg = validate({**DATA, "task": "binary", "metric": "auc"}, "test")
    snapshots = Snapshots(net=None)
    kinds = lambda c: [type(cb).__name__ for cb in make_callbacks(c, "fold", False, 10, snapshots=snapshots)]
    assert not {"StopAfterBest", "EarlyStopping"} & set(kinds(member_config(cfg, "realmlp", "binary").train))
    on = validate({**DATA, "task": "binary", "metric": "auc", "model": {"realmlp": {"early_stopping": 3}}}, "test")
    member = member_config(on, "realmlp", "binary").train
    assert (member.early_stopping, member.early_stopping_factor) == (3, 2.0)
    assert "StopAfterBest" in kinds(member)
    assert "EarlyStopping" in kinds(member_config(cfg, "mlp", "binary").train)  # the mlp keeps Keras' patience


def test_the_best_checkpoint_keeps_the_best_epochs_weights_in_order_for_realmlp():
    from types import SimpleNamespace

    from pipeline.config import validate
    from pipeline.training.callbacks import Snapshots
    from pipeline.training.recipes import member_config

    net = SimpleNamespace(w=0.0)
    net.get_weights = lambda: [np.full(1, net.w)]
    snapshots = Snapshots(net, best_epochs=3)
    # Monitored values (lower is better); epoch 3 ties epoch 2's value and ranks after it; NaN never counts.
    for epoch, value in enumerate([0.9, 0.5, 0.5, float("nan"), 0.4, 0.8, 0.45]):
        net.w = float(epoch + 1)
        snapshots.on_epoch_end(epoch, {"val_loss": value})
    assert (snapshots.best_epoch, snapshots.best_loss) == (5, 0.4)
    kept = snapshots.members(["best", "last"])
    assert {k: float(w[0][0]) for k, w in kept.items()} == {"best": 5.0, "best2": 7.0, "best3": 2.0, "last": 7.0}
    assert list(kept) == ["best", "best2", "best3", "last"]  # best first: export's one network is the best epoch
    one = Snapshots(net)  # train.best_epochs 1: the best alone, as before
    for epoch, value in enumerate([0.9, 0.5, 0.7]):
        net.w = float(epoch + 1)
        one.on_epoch_end(epoch, {"val_loss": value})
    assert {k: float(w[0][0]) for k, w in one.members(["best"]).items()} == {"best": 2.0}

    cfg = validate({**DATA, "task": "binary", "metric": "auc"}, "test")
    assert member_config(cfg, "realmlp", "binary").train.best_epochs == 5
    assert member_config(cfg, "mlp", "binary").train.best_epochs == 1
    assert member_config(cfg, "tabm", "binary").train.best_epochs == 1


@pytest.mark.parametrize("metric, task, calibration", [("logloss", "multiclass", "ts-mix"),
                                                      ("logloss", "binary", "ts-mix"), ("auc", "binary", "none"),
                                                      ("accuracy", "multiclass", "none"), ("rmse", "regression", "none")])
def test_realmlp_recipe_scales_the_temperature_only_for_log_loss(metric, task, calibration):
    from pipeline.config import validate
    from pipeline.training.recipes import member_config

    cfg = validate({**DATA, "task": task, "metric": metric}, "test")
    assert member_config(cfg, "realmlp", task).train.calibration == calibration
    assert member_config(cfg, "mlp", task).train.calibration == "none"  # train.calibration, off by default
    if task != "regression":  # the section's own setting wins over auto
        off = validate({**DATA, "task": task, "metric": metric, "model": {"realmlp": {"calibration": "none"}}}, "test")
        assert member_config(off, "realmlp", task).train.calibration == "none"


@pytest.mark.parametrize("task, classes", [("multiclass", 4), ("binary", 2)])
def test_temperature_scaling_finds_the_temperature_that_made_the_labels(task, classes):
    from scipy.special import softmax

    from pipeline.training.calibration import calibrate, fit_temperature

    rng = np.random.default_rng(0)
    n = 20_000
    z = rng.normal(size=(n, classes)) * 3
    if task == "binary":
        z[:, 0] = 0.0
    # labels drawn from softmax(z / 2.5): the logits are 2.5 times too confident
    truth = softmax(z / 2.5, axis=1)
    y = (rng.random(n)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1)
    raw = z[:, 1:] if task == "binary" else z
    t = fit_temperature(raw, y, task)
    assert t["inverse_temperature"] == pytest.approx(1 / 2.5, rel=0.05)
    assert t["mix"] == pytest.approx(1 / (n + 1))
    p = calibrate(raw[:5], task, t)
    expected = (1 - t["mix"]) * softmax(t["inverse_temperature"] * z[:5], axis=1) + t["mix"] / classes
    np.testing.assert_allclose(p, expected[:, 1] if task == "binary" else expected, rtol=1e-12)
    # rows a model separates perfectly: the temperature goes to its bound, the probabilities stay finite
    sure = fit_temperature(np.array([[5.0], [-5.0]] * 50), np.array([1, 0] * 50), "binary")
    assert np.isfinite(calibrate(np.array([[5.0]]), "binary", sure)).all()


def test_model_k_moved_to_the_tabm_section():
    from pipeline.config import validate
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="model.tabm.k"):
        validate({**DATA, "model": {"k": 8}}, "test")


def test_piecewise_linear_encoding_follows_its_definition():
    from pipeline.models.tabm import PiecewiseLinearEmbedding

    layer = PiecewiseLinearEmbedding(bins=4, dim=2)
    train = np.column_stack([np.linspace(0, 4, 401), np.full(401, 3.0)]).astype("float32")
    layer.build(train.shape)
    layer.adapt_to(train)  # column 0: edges 0, 1, 2, 3, 4; column 1: constant, one bin
    x = np.array([[2.5, 3.0], [-1.0, 3.0], [9.0, 3.0]], "float32")
    v = x[:, :, None] * layer.enc_w.numpy() + layer.enc_b.numpy()
    first = np.minimum(v[..., :1], 1)
    middle = np.clip(v[..., 1:-1], 0, 1)
    last = np.maximum(v[..., -1:], 0)
    encoded = np.concatenate([first, middle, last], axis=-1)[:, 0]
    np.testing.assert_allclose(encoded, [[1, 1, 0.5, 0], [-1, 0, 0, 0], [1, 1, 1, 6]], atol=1e-6)
    kernel = np.random.default_rng(0).normal(size=layer.kernel.shape).astype("float32")
    layer.kernel.assign(kernel)  # zero at the start (version B); any W from here
    out = layer(x).numpy().reshape(3, 2, 2)
    expected = x[:, 0, None] * layer.a.numpy()[0] + layer.c.numpy()[0] + encoded @ kernel[0]
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant, embedding", [("mini", "ple"), ("mini", "none"), ("full", "ple")])
@pytest.mark.parametrize("task, outputs", [("regression", 1), ("binary", 1), ("multiclass", 3)])
def test_tabm_members_differ_and_predict_their_mean(variant, embedding, task, outputs):
    from scipy.special import expit, softmax

    net, x = _built("tabm", TabMConfig(variant=variant, k=4, hidden=[16, 8], dropout=0.0, numeric_embedding=embedding),
                    outputs, task)
    members = net(x, training=True).numpy()
    assert members.shape == (256, 4, outputs)
    assert np.std(members, axis=1).mean() > 1e-4
    out = net(x, training=False).numpy()
    if task == "regression":
        np.testing.assert_allclose(out, members.mean(axis=1), rtol=1e-4, atol=1e-5)
    elif task == "binary":
        np.testing.assert_allclose(expit(out), expit(members).mean(axis=1), rtol=1e-4, atol=1e-6)
    else:
        np.testing.assert_allclose(softmax(out, axis=1), softmax(members, axis=2).mean(axis=1), rtol=1e-4, atol=1e-6)
    kinds = [type(l).__name__ for l in net.layers]
    if variant == "mini":  # shared hidden layers: one Dense each over all members' rows
        assert kinds.count("Dense") == 2 and "EnsembleDense" not in kinds and "MemberAdapter" in kinds
        assert net.get_layer("dense_0").kernel.shape == (net.get_layer("adapter").output_shape[-1], 16)


def test_tabm_adapters_start_per_feature_chunk():
    net, _ = _built("tabm", TabMConfig(k=3, hidden=[8], embedding_dim=4))
    r = net.get_layer("adapter").r.numpy()
    chunks = [4] * 4 + [1, 1] + [5]  # PLE per continuous column, the two indicators, the embedding
    starts = np.cumsum([0] + chunks[:-1])
    for s, c in zip(starts, chunks):
        assert np.allclose(r[:, s:s + c], r[:, s:s + 1])


@pytest.mark.parametrize("name, section", [("realmlp", RealMLPConfig(hidden=[16, 16])),
                                           ("tabm", TabMConfig(k=4, hidden=[16], bins=8))])
def test_save_load_safe_mode_and_tflite_serve_the_numeric_embeddings(tmp_path, name, section):
    import tf_keras as keras

    from pipeline.export.tflite import LiteModel, convert

    net, _ = _built(name, section, 3, "multiclass")
    x = _batch(16, seed=1)
    x["numeric"][:4, :4] *= 50  # beyond the bins and the clipping range seen in training
    net.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(again.predict(x, verbose=0), net.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    got = LiteModel(convert(net, "float32")).predict(x)
    np.testing.assert_allclose(got, net.predict(x, verbose=0), rtol=1e-4, atol=1e-4)


def test_a_saved_network_loads_in_a_process_that_never_built_one(tmp_path):
    """--predict, and a run whose folds trained in worker processes, load networks in a process
    that never imported the model modules: their custom layers must still be known to Keras."""
    import subprocess
    import sys

    paths = []
    for name, section in (("realmlp", RealMLPConfig(hidden=[8])), ("tabm", TabMConfig(k=2, hidden=[8], bins=4))):
        net, _ = _built(name, section)
        paths.append(str(tmp_path / f"{name}.keras"))
        net.save(paths[-1])
    code = ("import sys, pipeline\nfrom pipeline.training.members import load_network\n"
            "print([type(load_network(p)).__name__ for p in sys.argv[1:]])")
    out = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("['Functional', 'Functional']")


def test_every_module_that_registers_keras_objects_is_imported_before_a_load():
    from pathlib import Path

    from pipeline.models import KERAS_OBJECT_MODULES

    root = Path(__file__).resolve().parents[1]
    registering = {".".join(p.relative_to(root).with_suffix("").parts) for p in (root / "pipeline").rglob("*.py")
                   if "register_keras_serializable" in p.read_text()}
    assert registering == set(KERAS_OBJECT_MODULES)


@pytest.mark.slow
def test_a_run_of_realmlp_and_tabm_trains_saves_and_predicts_as_saved(tiny_comp, tmp_path):
    import pandas as pd

    from conftest import FAST
    from pipeline import run_competition
    from pipeline.runs import Run

    cfg = tiny_comp("health_insurance")
    # Scored by log loss, so realmlp's networks carry a temperature (train.calibration ts-mix) that
    # predicting again must apply as the run did.
    result = run_competition(cfg, FAST + ["metric=logloss", "model.members=[realmlp, tabm]", "model.realmlp.epochs=3",
                                          "model.realmlp.hidden=[16, 16]", "model.tabm.epochs=2",
                                          "model.tabm.k=4", "model.tabm.hidden=[16]"],
                             output_dir=tmp_path, run_name="authors")
    assert set(result.scores["members"]) == {"realmlp", "tabm"}
    history = pd.read_csv(result.run_dir / "folds" / "fold_0" / "history.csv")
    # realmlp trains every epoch of its recipe (no early stopping), tabm its two
    assert history.groupby("member")["epoch"].count().to_dict() == {"realmlp": 3, "tabm": 2}
    run = Run.open(result.run_dir)
    test = pd.read_csv(cfg.parent / "data" / "test.csv.gz")
    target = run.cfg.data.target
    again = run.predict(test)[target].to_numpy()
    saved = pd.read_csv(run.test_pred_path)[target].to_numpy()
    np.testing.assert_allclose(again, saved, rtol=1e-5, atol=1e-6)
    member = result.run_dir / "folds" / "fold_0"
    # realmlp averages its best epochs (model.realmlp.best_epochs 5): of 3 epochs, all three, each
    # a network with its own temperature, which predicting again above read back; tabm its best.
    assert [p.name for p in sorted((member / "realmlp").glob("*.keras"))] == \
        ["model_best.keras", "model_best2.keras", "model_best3.keras"]
    assert [p.name for p in (member / "tabm").glob("*.keras")] == ["model_best.keras"]
    members = run.artifact(run.trained_units()[0]).members()
    assert set(members["realmlp"].temperatures) == {"best", "best2", "best3"} and members["tabm"].temperatures == {}
    assert all(t["inverse_temperature"] > 0 for t in members["realmlp"].temperatures.values())
    # Loaded, the three share one model (built once, each file's weights read into it) ...
    assert len({id(net) for net in members["realmlp"].networks()}) == 1
    # ... and a damaged runner-up is named, not half-read.
    (member / "realmlp" / "model_best2.keras").write_bytes(b"PK\x03\x04 not a zip")
    from pipeline.errors import DataError

    with pytest.raises(DataError, match="model_best2.keras"):
        list(run.artifact(run.trained_units()[0]).members()["realmlp"].networks())


@pytest.mark.parametrize("family", ["realmlp", "tabm"])
def test_tuning_has_the_authors_space_for_each_family(family):
    import optuna

    from pipeline.config import validate
    from pipeline.tuning.space import resolve_space, suggest

    cfg = validate({**DATA, "task": "binary", "model": {"name": family}}, "test")
    space = resolve_space(cfg, "binary")
    assert space and all(key.startswith(f"model.{family}.") for key in space)
    values = suggest(optuna.trial.FixedTrial({k: (s.choices[0] if s.choices else s.low) for k, s in space.items()}),
                     space)
    tuned = validate({**DATA, "task": "binary", "model": {"name": family, family: {
        k.split(".")[-1]: v for k, v in values.items()}}}, "test")
    assert getattr(tuned.model, family).lr == values[f"model.{family}.lr"]


def test_compression_of_a_network_of_custom_layers_is_one_error():
    from pipeline.errors import ConfigError
    from pipeline.export.compress import require_compressible

    net, _ = _built("realmlp", RealMLPConfig(hidden=[8]))
    with pytest.raises(ConfigError, match="export qat: the realmlp network has no Dense or Conv2D layer"):
        require_compressible(net, "qat")
    tabm, _ = _built("tabm", TabMConfig(k=2, hidden=[8]))
    require_compressible(tabm, "qat")  # its shared hidden layers are Keras Dense layers
