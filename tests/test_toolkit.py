"""Each training technique changes what it claims to change (not only that it runs)."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tf_keras as keras

from conftest import FAST, ROOT
from pipeline import run_competition
from pipeline.config import MLPConfig, TrainConfig
from pipeline.errors import ConfigError
from pipeline.models import get_builder
from pipeline.models.heads import make_loss
from pipeline.preprocessing.table import InputSpec
from pipeline.training.callbacks import Snapshots, ema_variables, reestimate_batchnorm
from pipeline.training.devices import precision_policy, resolve_precision
from pipeline.training.lr_find import lr_find, suggest_lr, valley_lr
from pipeline.training.optimizers import OPTIMIZERS, Lamb, make_optimizer
from pipeline.training.schedules import effective_lr, lr_at, make_schedule
from pipeline.training.trainer import Trainer

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 4)).astype("float32")
Y = (X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1).astype("float32")


def linear(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((4,), name="numeric")
    return keras.Model(inp, keras.layers.Dense(1, name="head")(inp))


def trainer(net=None, optimizer=None, **kwargs):
    t = Trainer(net or linear(), **kwargs)
    t.compile(optimizer=optimizer or keras.optimizers.SGD(0.1), loss="mse")
    t.build_optimizer()
    return t


def data(batch, repeat=1):
    return tf.data.Dataset.from_tensor_slices(({"numeric": X}, Y)).batch(batch).repeat(repeat)


def weights(model):
    return [w.numpy().copy() for w in model.trainable_variables]


# ------------------------------------------------------------------ speed and memory
def test_gradient_accumulation_equals_one_step_on_the_larger_batch():
    accumulated = trainer(grad_accum_steps=4)
    accumulated.fit(data(8), epochs=1, verbose=0)  # 4 micro-batches of 8 → 1 optimizer step
    big = trainer()
    big.fit(data(32), epochs=1, verbose=0)  # 1 step on the 32-row batch
    assert int(accumulated.optimizer.iterations) == int(big.optimizer.iterations) == 1
    for a, b in zip(weights(accumulated), weights(big)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    plain = trainer()
    plain.fit(data(8), epochs=1, verbose=0)  # 4 steps: not the same
    assert not np.allclose(weights(plain)[0], weights(big)[0])


def test_gradient_checkpointing_gives_the_same_gradients_and_saves(tmp_path):
    spec = InputSpec(numeric_dim=4)
    grads = []
    for checkpoint in (False, True):
        keras.utils.set_random_seed(0)
        net = get_builder("mlp")(spec, MLPConfig(hidden=[16, 16], norm="layer", checkpoint=checkpoint), 1)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((net({"numeric": X}, training=True)[:, 0] - Y) ** 2)
        grads.append([g.numpy() for g in tape.gradient(loss, net.trainable_variables)])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert [l.name for l in net.layers if type(l).__name__ == "Recompute"] == ["block_0", "block_1"]
    net.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again({"numeric": X}), net({"numeric": X}), rtol=1e-6)
    with pytest.raises(ValueError, match="checkpoint cannot be combined with norm=batch"):
        MLPConfig(checkpoint=True, norm="batch")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_float32_outputs(policy):
    spec = InputSpec(numeric_dim=4, embeddings=[("cat__a", 5, 3)])
    with precision_policy(policy):
        net = get_builder("mlp")(spec, MLPConfig(hidden=[8]), 1)
        t = trainer(net, keras.optimizers.Adam(1e-2))
        t.fit(tf.data.Dataset.from_tensor_slices(({"numeric": X, "cat__a": np.zeros((32, 1), "int32")}, Y)).batch(8),
              epochs=2, verbose=0)
    assert net.get_layer("dense_0").compute_dtype == policy.split("_")[1]
    assert net.get_layer("dense_0").kernel.dtype == "float32"  # variables stay float32
    assert net.output.dtype == "float32"
    assert t._loss_scaled == (policy == "mixed_float16")  # loss scaling only for float16
    assert np.isfinite(net.predict({"numeric": X, "cat__a": np.zeros((32, 1), "int32")}, verbose=0)).all()
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after
    assert resolve_precision("auto") == "float32"  # no GPU or TPU here


def test_linear_lr_scaling():
    assert effective_lr(TrainConfig(lr=0.001, batch_size=1024, scale_lr=True)) == pytest.approx(0.004)
    assert effective_lr(TrainConfig(lr=0.001, batch_size=1024)) == 0.001


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np, tensorflow as tf
    if sys.argv[1] == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tf_keras as keras
    from pipeline.training.devices import make_strategy
    from pipeline.training.trainer import Trainer
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32"); y = (x @ np.array([1., -2., .5, 3.])).astype("float32")
    strategy = make_strategy(sys.argv[1])
    with strategy.scope():
        keras.utils.set_random_seed(0)
        inp = keras.Input((4,), name="numeric")
        net = keras.Model(inp, keras.layers.Dense(1)(keras.layers.Dense(8, activation="relu")(inp)))
        t = Trainer(net); t.compile(keras.optimizers.SGD(0.05), "mse")
    ds = tf.data.Dataset.from_tensor_slices(({"numeric": x}, y)).batch(16)
    t.fit(ds, epochs=3, verbose=0)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "weights": [w.tolist() for w in net.get_weights()]}))
""")


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_matches_one_device(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    out = {}
    for mode in ("default", "mirrored"):
        proc = subprocess.run([sys.executable, str(script), mode], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["default"]["replicas"] == 1 and out["mirrored"]["replicas"] == 2
    for a, b in zip(out["default"]["weights"], out["mirrored"]["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ stability
@pytest.mark.parametrize("clip", ["value", "norm", "global_norm"])
def test_clipping_bounds_the_update(clip):
    t = trainer(optimizer=make_optimizer(TrainConfig(optimizer="sgd", momentum=0.0, clip=clip, clip_value=0.01), 1.0))
    before = weights(t)
    huge = tf.data.Dataset.from_tensor_slices(({"numeric": X * 1000}, Y * 1000)).batch(32)
    t.fit(huge, epochs=1, verbose=0)
    step = np.concatenate([(a - b).ravel() for a, b in zip(weights(t), before)])
    bound = {"value": 0.01 * np.sqrt(step.size), "norm": 0.01 * 2, "global_norm": 0.01}[clip]
    assert 0 < np.linalg.norm(step) <= bound + 1e-6


def test_lookahead_moves_slow_weights_alpha_of_the_way():
    la = trainer(lookahead_steps=2, lookahead_alpha=0.5)
    start = weights(la)
    plain = trainer()
    plain.fit(data(16), epochs=1, verbose=0)  # the 2 fast steps
    la.fit(data(16), epochs=1, verbose=0)
    for s, f, w in zip(start, weights(plain), weights(la)):
        np.testing.assert_allclose(w, s + 0.5 * (f - s), rtol=1e-5, atol=1e-6)


def test_group_norm_builds_with_a_dividing_group_count():
    net = get_builder("mlp")(InputSpec(numeric_dim=4), MLPConfig(hidden=[12], norm="group", groups=8), 1)
    assert net.get_layer("group_norm_0").groups == 4  # gcd(8, 12)


# ------------------------------------------------------------------ accuracy
def test_every_schedule_follows_its_documented_curve():
    def curve(**kw):
        cfg = TrainConfig(lr=0.1, epochs=10, **kw)
        return np.array(lr_at(make_schedule(cfg, 10), range(100)))

    assert np.allclose(curve(schedule="constant"), 0.1)
    warm = curve(schedule="constant", warmup_epochs=2)
    assert warm[0] == pytest.approx(0.004) and np.all(np.diff(warm[:20]) > 0) and np.allclose(warm[20:], 0.1)
    cos = curve(schedule="cosine")
    assert cos[0] == pytest.approx(0.1) and cos[50] == pytest.approx(0.05, rel=0.05) and cos[99] < 1e-3
    sgdr = curve(schedule="sgdr", sgdr_period=2, sgdr_mult=2)
    assert sgdr[19] < 0.01 and sgdr[20] == pytest.approx(0.1)  # restart after 2 epochs, next cycle 4 long
    assert sgdr[59] < 0.01 and sgdr[60] == pytest.approx(0.1)
    one = curve(schedule="onecycle")
    assert one[0] == pytest.approx(0.004) and int(np.argmax(one)) == 30 and one[99] < 1e-4  # → lr/25e4 at step 100
    step = curve(schedule="step", step_every=3, step_factor=0.5)
    assert step[29] == pytest.approx(0.1) and step[30] == pytest.approx(0.05) and step[60] == pytest.approx(0.025)


def test_every_optimizer_reduces_a_toy_loss():
    for name in OPTIMIZERS:
        t = trainer(optimizer=make_optimizer(TrainConfig(optimizer=name, weight_decay=1e-4), 0.05))
        before = float(t.evaluate(data(32), verbose=0))
        t.fit(data(8, repeat=20), epochs=1, verbose=0)
        assert float(t.evaluate(data(32), verbose=0)) < 0.5 * before, name


def test_lamb_step_follows_the_trust_ratio():
    w = tf.Variable([[3.0, 4.0]])
    g = tf.constant([[0.1, -0.2]])
    opt = Lamb(learning_rate=0.1, weight_decay=0.0)
    opt.build([w])
    opt.apply_gradients([(g, w)])
    update = g.numpy() / (np.abs(g.numpy()) + 1e-6)  # first step: m_hat / sqrt(v_hat) = sign(g)
    trust = 5.0 / np.linalg.norm(update)
    np.testing.assert_allclose(w.numpy(), [[3.0, 4.0]] - 0.1 * trust * update, rtol=1e-4)


def test_ema_weights_are_the_analytic_average():
    t = trainer(optimizer=keras.optimizers.SGD(0.05, use_ema=True, ema_momentum=0.9))
    seen = [weights(t)]

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(weights(t))

    t.fit(data(8), epochs=1, verbose=0, callbacks=[Record()])
    expected = seen[0]
    for w in seen[1:]:
        expected = [0.9 * e + 0.1 * x for e, x in zip(expected, w)]
    for avg, e in zip(ema_variables(t.optimizer, t.net.trainable_variables), expected):
        np.testing.assert_allclose(avg.numpy(), e, rtol=1e-5, atol=1e-6)


def test_with_ema_the_snapshots_keep_the_averaged_weights():
    """Predictions and saved models use the EMA weights: the snapshots hold them, not the raw ones."""
    t = trainer(optimizer=keras.optimizers.SGD(0.05, use_ema=True, ema_momentum=0.9))
    snap = Snapshots(t.net, ema=True, valid_ds=data(32))
    raw = []

    class Raw(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raw.append(weights(t))

    t.fit(data(8), epochs=3, verbose=0, callbacks=[Raw(), snap], validation_data=data(32))
    ema_now = [v.numpy() for v in ema_variables(t.optimizer, t.net.trainable_variables)]
    last = snap.members(["last"])["last"]  # fit() ends by writing the EMA into the weights
    for a, b in zip(last, ema_now):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.allclose(last[0], raw[-1][0])  # not the raw weights of the last epoch
    # "best" was judged on the EMA weights: they give back the val_loss it recorded.
    t.net.set_weights(snap.best)
    assert float(t.evaluate(data(32), verbose=0)) == pytest.approx(snap.best_loss, rel=1e-5)


def test_swa_weights_are_the_mean_of_the_last_epochs():
    t = trainer()
    snap = Snapshots(t.net, swa_epochs=3)
    per_epoch = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            per_epoch.append(t.net.get_weights())

    t.fit(data(8), epochs=5, verbose=0, callbacks=[snap, Record()], validation_data=data(32))
    swa = snap.members(["swa"])["swa"]
    for i, w in enumerate(swa):
        np.testing.assert_allclose(w, np.mean([e[i] for e in per_epoch[-3:]], axis=0), rtol=1e-6)
    best = snap.members(["best"])["best"]
    assert snap.best_epoch >= 1 and len(best) == len(swa)


def test_swa_reestimates_batchnorm_statistics():
    keras.utils.set_random_seed(0)
    net = get_builder("mlp")(InputSpec(numeric_dim=4), MLPConfig(hidden=[8], norm="batch"), 1)
    bn = net.get_layer("batch_norm_0")
    shifted = {"numeric": X * 3 + 5}
    reestimate_batchnorm(net, tf.data.Dataset.from_tensor_slices(shifted).batch(8))
    pre_bn = keras.Model(net.input, net.get_layer("dense_0").output)(shifted).numpy()
    np.testing.assert_allclose(bn.moving_mean.numpy(), pre_bn.mean(0), rtol=1e-4, atol=1e-4)
    assert bn.momentum == 0.99  # restored


def test_sam_step_differs_from_plain_and_reduces_the_loss():
    sam, plain = trainer(sam_rho=0.5), trainer()
    sam.fit(data(32), epochs=1, verbose=0)
    plain.fit(data(32), epochs=1, verbose=0)
    assert not np.allclose(weights(sam)[0], weights(plain)[0])
    sam2 = trainer(sam_rho=0.05)
    before = float(sam2.evaluate(data(32), verbose=0))
    sam2.fit(data(8, repeat=10), epochs=1, verbose=0)
    assert float(sam2.evaluate(data(32), verbose=0)) < 0.2 * before


def test_mixup_mixes_inputs_and_labels_by_the_same_amount():
    from pipeline.data.datasets import make_dataset, mixup_batch

    numeric = tf.constant(np.arange(16, dtype="float32").reshape(16, 1))
    cats = tf.constant(np.arange(16, dtype="int32").reshape(16, 1))
    x, y = mixup_batch({"numeric": numeric, "cat__a": cats}, tf.constant(np.arange(16, dtype="float32")), 0.4,
                       tf.constant([1, 2], tf.int64))
    np.testing.assert_allclose(x["numeric"].numpy()[:, 0], y.numpy(), rtol=1e-5)  # same lambda
    assert not np.allclose(y.numpy(), np.arange(16))  # something was mixed
    assert set(x["cat__a"].numpy().ravel()) <= set(range(16))  # categories are picked, never averaged
    # In the dataset: reproducible for a seed, different for another.
    feats, labels = {"numeric": np.arange(32, dtype="float32").reshape(32, 1)}, np.arange(32, dtype="float32")
    a, b, c = (list(make_dataset(feats, labels, batch_size=8, shuffle=True, seed=s, mixup_alpha=0.4)) for s in (1, 1, 2))
    np.testing.assert_array_equal(a[0][1], b[0][1])
    assert not np.allclose(a[0][1], c[0][1])
    np.testing.assert_allclose(a[0][0]["numeric"][:, 0], a[0][1], rtol=1e-5)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_datasets_read_the_arrays_in_place_without_a_copy():
    """tf.data's default graph rewrite turned the captured arrays into constants (a full copy per
    dataset, at its first batch); an unshuffled dataset's cache was another. 256 MB of inputs."""
    from pipeline.data.datasets import make_dataset
    from pipeline.preprocessing.table import aligned_empty

    x = aligned_empty((65536, 1024), np.float32)
    x[:] = np.arange(65536, dtype=np.float32)[:, None]
    y = np.arange(65536, dtype=np.float32)
    before = _rss_mb()
    shuffled = make_dataset({"numeric": x}, y, batch_size=4096, shuffle=True, seed=1)
    ordered = make_dataset({"numeric": x}, batch_size=4096)
    for batch_x, batch_y in shuffled:  # a permutation of the rows, each with its own label
        np.testing.assert_array_equal(batch_x["numeric"][:, 7], batch_y)
    rows = np.concatenate([batch["numeric"][:, 0] for batch in ordered])
    np.testing.assert_array_equal(rows, y)
    assert _rss_mb() - before < 160, "iterating the datasets copied their 256 MB of inputs"


def test_datasets_of_a_packed_block_give_the_plain_blocks_batches():
    """A fold's packed numeric block (its 0/1 columns as bits) is put back together batch by
    batch: the same batches, shuffled and in order, as from the float32 block; with the flags
    among the other columns (11 of them: two bytes a row, the second partly used) or last."""
    from pipeline.data.datasets import make_dataset
    from pipeline.preprocessing.arrays import PackedColumns

    r = np.random.default_rng(0)
    flags = [1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13]
    plain = r.normal(size=(100, 14)).astype(np.float32)
    plain[:, flags] = r.integers(0, 2, size=(100, len(flags)))
    packed = PackedColumns(100, 14, flags)
    packed[0:100] = plain
    assert packed.flags.shape == (100, 2)
    last = PackedColumns(100, 14, range(3, 14))
    ordered = plain[:, np.r_[[0, 3, 9], flags]]
    last[0:100] = ordered
    assert last.in_order
    rows = np.concatenate([batch["numeric"] for batch in make_dataset({"numeric": last}, batch_size=32)])
    np.testing.assert_array_equal(rows, ordered)
    codes = r.integers(0, 9, size=(100, 1)).astype(np.int32)
    y = np.arange(100, dtype=np.float32)
    for shuffle in (True, False):
        a = list(make_dataset({"numeric": plain, "cat__c": codes}, y, batch_size=32, shuffle=shuffle, seed=3))
        b = list(make_dataset({"numeric": packed, "cat__c": codes}, y, batch_size=32, shuffle=shuffle, seed=3))
        for (xa, ya), (xb, yb) in zip(a, b):
            assert xb["numeric"].dtype == tf.float32
            np.testing.assert_array_equal(xa["numeric"], xb["numeric"])
            np.testing.assert_array_equal(xa["cat__c"], xb["cat__c"])
            np.testing.assert_array_equal(ya, yb)
    rows = np.concatenate([batch["numeric"] for batch in make_dataset({"numeric": packed}, batch_size=32)])
    np.testing.assert_array_equal(rows, plain)


def test_datasets_run_without_tf_datas_autotuning_thread_and_keep_their_epochs():
    """Every dataset make_dataset builds (training, with Mixup, in order) has autotuning off: Keras
    makes a training iterator per epoch, and deleting one waited for that thread's next wake-up
    (about half an epoch on diamonds). Without it, fit still makes one iterator per epoch, each a
    new permutation of every row, the same for the same seed."""
    from pipeline.data.datasets import make_dataset

    n, bs = 70, 16
    feats, y = {"numeric": np.arange(n, dtype="float32").reshape(n, 1)}, np.arange(n, dtype="float32")
    built = [make_dataset(feats, y, batch_size=bs, shuffle=True, seed=5),
             make_dataset(feats, y, batch_size=bs, shuffle=True, seed=5, mixup_alpha=0.4),
             make_dataset(feats, batch_size=bs)]
    assert all(ds.options().autotune.enabled is False for ds in built)
    shuffled = built[0]
    orders = []
    for _ in range(3):  # what Keras does every epoch: a new iterator over the whole dataset
        batches = list(shuffled)
        assert [len(b[1]) for b in batches] == [16, 16, 16, 16, 6]
        rows = np.concatenate([b[0]["numeric"][:, 0] for b in batches])
        np.testing.assert_array_equal(rows, np.concatenate([b[1] for b in batches]))  # rows keep their labels
        assert sorted(rows) == list(range(n))
        orders.append(tuple(rows))
    assert len(set(orders)) == 3  # a new permutation every epoch
    again = make_dataset(feats, y, batch_size=bs, shuffle=True, seed=5)
    assert [tuple(np.concatenate([b[1] for b in again])) for _ in range(3)] == orders


@pytest.mark.slow
@pytest.mark.parametrize("mixup", [0.0, 0.4])
def test_a_fit_from_one_iterator_sees_the_batches_of_an_iterator_per_epoch(mixup):
    """train_model fits tabular rows from one repeated iterator (training_batches), not a new
    iterator per epoch: every epoch's batches must be those Keras fed from the finite dataset
    (the same permutations, the same Mixup draws), so the change leaves results to the bit."""
    from pipeline.config import Config
    from pipeline.data.fold_inputs import FoldInputs
    from pipeline.training.fold import training_batches

    n, bs = 70, 16
    feats, y = {"numeric": np.arange(n, dtype="float32").reshape(n, 1)}, np.arange(n, dtype="float32")
    cfg = Config.model_validate({"data": {"target": "t"}, "train": {"mixup_alpha": mixup}})

    class Recorder(keras.Model):  # keeps each batch it is fed, trains nothing
        def __init__(self):
            super().__init__()
            self.dense, self.fed = keras.layers.Dense(1), []

        def call(self, x):
            return self.dense(x["numeric"])

        def train_step(self, data):
            self.fed.append(np.concatenate([data[0]["numeric"].numpy()[:, 0], data[1].numpy()]))
            return {}

    def fed(one_iterator: bool):
        keras.utils.set_random_seed(3)
        inputs = FoldInputs({"train": feats}, cfg)
        model = Recorder()
        model.compile(optimizer="sgd", loss="mse", run_eagerly=True)
        if one_iterator:
            ds, steps = training_batches(inputs, y, seed=5, batch_size=bs, steps=5)
            assert steps == 5
            model.fit(ds, steps_per_epoch=steps, epochs=3, verbose=0)
        else:
            model.fit(inputs.dataset("train", y, training=True, seed=5, batch_size=bs), epochs=3, verbose=0)
        return model.fed

    finite, repeated = fed(False), fed(True)
    assert len(finite) == len(repeated) == 15
    for a, b in zip(finite, repeated):
        np.testing.assert_array_equal(a, b)
    assert len({tuple(np.concatenate(finite[e * 5:(e + 1) * 5])) for e in range(3)}) == 3  # new order per epoch


def test_label_smoothing_softens_the_target():
    y, confident = np.array([[1.0]]), np.array([[20.0]])
    plain = float(make_loss("binary", TrainConfig())(y, confident))
    smooth = float(make_loss("binary", TrainConfig(label_smoothing=0.2))(y, confident))
    assert plain < 1e-6 and smooth > 1.0  # a confident correct logit is now penalized


def test_lr_range_test_suggests_a_sensible_lr(tiny_comp, tmp_path):
    from pipeline.config_files import load_config
    from pipeline.data import load_competition

    data = load_competition(load_config(tiny_comp("diamonds", train_rows=300),
                                        ["train.batch_size=32", "train.optimizer=adam"]))
    lr, sweep = lr_find(data, steps=120)
    assert 1e-4 <= lr <= 0.3
    assert sweep.lrs[0] == pytest.approx(1e-7) and np.all(np.diff(sweep.lrs) > 0)
    # The suggestion is the checked one: the valley or a fraction of it, whichever short run validated best.
    assert len(sweep.checked) == 3 and lr == min(sweep.checked, key=sweep.checked.get)
    assert sorted(sweep.checked) == pytest.approx(sorted(sweep.valley * f for f in (1, 1 / 3, 1 / 10)))
    # The valley: halfway along the longest falling stretch (a noisy bump does not break it).
    curve = [5.0, 4.0, 4.2, 3.0, 2.0, 1.0, 0.5, 9.0]
    assert valley_lr([10.0 ** i for i in range(8)], curve) == pytest.approx(1e3)
    # Steepest fall (per log-LR) at 1e-3, before the minimum at 1e-1 and the blow-up at 1.
    assert suggest_lr([1e-4, 1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.9, 0.3, 0.25, 3.0]) == pytest.approx(1e-3)


def test_lr_find_command_writes_the_curve(tiny_comp, tmp_path, capsys):
    import run

    cfg = tiny_comp("diamonds", train_rows=200)
    # The command's path (range test, three checked short runs, the plot) with the cheaper mlp;
    # the range test itself is checked above.
    assert run.main(["--comp", str(cfg), "--lr-find", "--output-dir", str(tmp_path), "--set", "model.name=mlp",
                     "--set", "model.mlp.hidden=[16]"]) == 0
    pngs = list((tmp_path / "diamonds" / "lr_find").glob("*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:4] == b"\x89PNG"
    assert "suggested lr" in capsys.readouterr().out


# ------------------------------------------------------------------ through the pipeline
@pytest.mark.slow
def test_seed_averaging_and_checkpoint_ensemble_report_every_member(tiny_comp, tmp_path):
    cfg = tiny_comp("diamonds", train_rows=200)
    result = run_competition(cfg, FAST + ["model.name=mlp", "train.epochs=4", "train.seeds=2", "train.swa_epochs=2",
                                          "train.checkpoints=[best, last, swa]"], output_dir=tmp_path)
    assert set(result.scores["members"]) == {"mlp", "hgb", "lightgbm"}  # the default members
    networks = sorted(f"seed{s}_{c}" for s in range(2) for c in ("best", "last", "swa"))
    assert sorted(result.scores["networks"]) == [f"mlp/{n}" for n in networks]
    fold = np.load(result.run_dir / "folds" / "fold_0" / "predictions.npz")
    # The mlp member is the mean of its networks; the run weighs it against HGB and LightGBM.
    np.testing.assert_allclose(fold["oof__mlp"], np.mean([fold[f"oof__mlp__{n}"] for n in networks], axis=0))
    assert len(list((result.run_dir / "folds" / "fold_0" / "mlp").glob("model_*.keras"))) == 6
    oof = pd.read_csv(result.files["oof"])
    assert result.scores["cv"] == pytest.approx(np.sqrt(np.mean((oof.price.to_numpy() - _train_y(cfg)) ** 2)))


def _train_y(cfg):
    return pd.read_csv(cfg.parent / "data" / "train.csv.gz")["price"].to_numpy()


@pytest.mark.slow
def test_all_switches_together_through_the_pipeline(tiny_comp, tmp_path):
    cfg = tiny_comp("health_insurance", train_rows=200)
    result = run_competition(cfg, FAST + [
        "model.name=mlp", "train.epochs=3", "train.ema=true", "train.sam_rho=0.05", "train.mixup_alpha=0.2",
        "train.label_smoothing=0.1", "train.lookahead_steps=3", "train.grad_accum_steps=2", "train.clip=global_norm",
        "train.schedule=onecycle", "train.optimizer=lamb", "train.jit_compile=true", "model.mlp.norm=group",
        "model.mlp.checkpoint=true", "train.precision=mixed_bfloat16"], output_dir=tmp_path)
    # Every switch on, and still a run whose score is its OOF predictions' score: finite
    # probabilities on every row, the AUC recomputed from oof.csv.
    from sklearn.metrics import roc_auc_score

    oof = pd.read_csv(result.files["oof"])
    y = (pd.read_csv(cfg.parent / "data" / "train.csv.gz")["whi"] == "yes").to_numpy()
    assert oof["whi"].between(0, 1).all() and len(oof) == len(y)
    assert result.scores["cv"] == pytest.approx(roc_auc_score(y, oof["whi"]), abs=1e-9)


@pytest.mark.slow
def test_switches_with_entity_embeddings(tiny_comp, tmp_path):
    """Embeddings give sparse gradients: SAM and accumulation must handle them."""
    cfg = tiny_comp("diamonds", train_rows=200)
    result = run_competition(cfg, FAST + [
        "model.name=mlp", "train.epochs=3", "train.sam_rho=0.05", "train.grad_accum_steps=2", "train.lookahead_steps=2",
        "train.mixup_alpha=0.2", "train.ema=true", "train.swa_epochs=2", "train.checkpoints=[best, swa]",
        "preprocessing.categorical=embedding"], output_dir=tmp_path)
    assert np.isfinite(result.scores["cv"]) and set(result.scores["members"]) == {"mlp", "hgb", "lightgbm"}
    assert set(result.scores["networks"]) == {"mlp/best", "mlp/swa"}


def test_label_smoothing_on_regression_is_refused(tiny_comp, tmp_path):
    with pytest.raises(ConfigError, match="train.label_smoothing applies to classification"):
        run_competition(tiny_comp("diamonds"), FAST + ["train.label_smoothing=0.1"], output_dir=tmp_path)
