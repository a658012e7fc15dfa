"""The image path: decoding, augmentation, Mixup/CutMix, TTA views, image models and backbones."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipeline.config import AugmentConfig, ImageConfig, TTAConfig
from pipeline.data.augment import cutmix_batch, mix_batch, view_batch
from pipeline.data.images import augment_batch, batches, decode, decoded_dataset


def save(path, array, fmt=None):
    Image.fromarray(array).save(path, format=fmt)
    return str(path)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    rgb = rng.integers(0, 256, (17, 13, 3), dtype=np.uint8)
    return {"gray_png": (save(tmp_path / "g.png", gray), gray),
            "rgb_jpg": (save(tmp_path / "c.jpg", rgb, "JPEG"), rgb),
            "rgb_png": (save(tmp_path / "c.png", rgb), rgb),
            "rgba_png": (save(tmp_path / "a.png", np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])), rgb)}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resize", ["resize", "pad"])
def test_decode_png_jpeg_gray_rgb_odd_sizes(files, channels, resize):
    for name, (path, _) in files.items():
        img = decode(tf.constant(path), (24, 28), channels, resize).numpy()
        assert img.shape == (24, 28, channels) and img.dtype == np.uint8, name
    # Same size, no padding: PNG decodes losslessly; gray → RGB repeats the channel.
    path, gray = files["gray_png"]
    np.testing.assert_array_equal(decode(tf.constant(path), (20, 30), 1).numpy()[..., 0], gray)
    rgb = decode(tf.constant(path), (20, 30), 3).numpy()
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    path, color = files["rgb_png"]
    np.testing.assert_array_equal(decode(tf.constant(path), (17, 13), 3).numpy(), color)
    # Pad-and-resize keeps the aspect ratio: a wide image gets black bands above and below.
    padded = decode(tf.constant(files["gray_png"][0]), (30, 30), 1, "pad").numpy()
    assert padded[:4].max() == 0 and padded[-4:].max() == 0 and padded[10:20].max() > 0


def random_batch(n=16, h=28, w=28, c=1, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(0, 255, (n, h, w, c)).astype(np.float32))


@pytest.mark.parametrize("aug", [
    AugmentConfig(hflip=True, vflip=True, rotation=30, shift=0.2, zoom=0.2, shear=0.2, brightness=0.3, contrast=0.4),
    AugmentConfig(randaugment_n=2, randaugment_m=9),
    AugmentConfig(rotation=15, fill="reflect", randaugment_n=3, randaugment_m=10),
])
def test_augmentation_keeps_shape_dtype_range_and_is_seeded(aug):
    for c in (1, 3):
        x = random_batch(c=c, h=24, w=20)
        out = augment_batch(x, tf.constant([1, 2]), aug)
        assert out.shape == x.shape and out.dtype == tf.float32
        assert float(tf.reduce_min(out)) >= 0 and float(tf.reduce_max(out)) <= 255
        again = augment_batch(x, tf.constant([1, 2]), aug)
        other = augment_batch(x, tf.constant([3, 4]), aug)
        np.testing.assert_array_equal(out.numpy(), again.numpy())
        assert not np.allclose(out.numpy(), other.numpy())
        assert not np.allclose(out.numpy(), x.numpy())


def test_cutmix_and_mixup_labels_sum_to_one_and_match_the_pasted_area():
    x = {"image": random_batch(n=32), "num": tf.random.normal([32, 3])}
    y = tf.one_hot(np.arange(32), 32)  # one class per row, so every move of label mass shows
    mixed, labels = cutmix_batch(x, y, 1.0, tf.constant([5, 6]))
    np.testing.assert_allclose(labels.numpy().sum(axis=1), 1, atol=1e-6)
    assert mixed["image"].shape == x["image"].shape and mixed["num"].shape == x["num"].shape
    # The share of pixels that changed matches the share of the label that moved to the partner.
    changed = (mixed["image"].numpy() != x["image"].numpy()).mean(axis=(1, 2, 3))
    own = labels.numpy()[np.arange(32), np.arange(32)]
    np.testing.assert_allclose(1 - own, changed, atol=0.02)
    for mix, cut in ((0.4, 0.0), (0.4, 1.0)):
        _, labels = mix_batch(x, y, tf.constant([1, 1]), mix, cut)
        np.testing.assert_allclose(labels.numpy().sum(axis=1), 1, atol=1e-6)


def test_tta_views_move_the_content_the_way_they_are_named():
    img = np.zeros((1, 20, 20, 1), np.float32)
    img[0, 8:12, 8:12] = 255
    tta = TTAConfig(shift=0.1, zoom=0.2, rotation=10)

    def centre(v):
        a = view_batch(tf.constant(img), v, tta).numpy()[0, ..., 0]
        rows, cols = np.nonzero(a > 127)
        return rows.mean(), cols.mean()

    r0, c0 = centre("identity")
    assert centre("shift_right")[1] == pytest.approx(c0 + 2) and centre("shift_left")[1] == pytest.approx(c0 - 2)
    assert centre("shift_down")[0] == pytest.approx(r0 + 2) and centre("shift_up")[0] == pytest.approx(r0 - 2)
    mass = {v: view_batch(tf.constant(img), v, tta).numpy().sum() for v in ("zoom_in", "zoom_out")}
    assert mass["zoom_in"] > img.sum() * 1.3 and mass["zoom_out"] < img.sum() * 0.8
    np.testing.assert_array_equal(view_batch(tf.constant(img), "identity", tta).numpy(), img)


def test_image_batches_identity_view_is_the_plain_pipeline(files, tmp_path):
    paths = np.array([files["gray_png"][0], files["rgb_png"][0], files["rgb_jpg"][0]] * 3, dtype=object)
    cfg = ImageConfig(column="f", size=[16, 16], channels=3)
    others = {"numeric": np.arange(9, dtype=np.float32).reshape(-1, 1)}
    for cache in ("", str(tmp_path / "cache"), None):
        decoded = decoded_dataset(paths, cfg, cache)
        plain = list(batches(decoded, others, None, cfg, batch_size=4))
        identity = list(batches(decoded, others, None, cfg, batch_size=4, view="identity"))
        assert len(plain) == 3 and plain[0]["image"].dtype == tf.float32 and plain[0]["image"].shape == (4, 16, 16, 3)
        for a, b in zip(plain, identity):
            np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
        np.testing.assert_array_equal(np.concatenate([b["numeric"] for b in plain]), others["numeric"])
    # Training batches: labels ride along, shuffled with their images, and every row appears once per epoch.
    y = np.arange(9, dtype=np.int32)
    epoch = list(batches(decoded_dataset(paths, cfg, ""), others, y, cfg, batch_size=4, training=True, seed=3))
    assert sorted(np.concatenate([b[1] for b in epoch]).tolist()) == list(range(9))
    for x, labels in epoch:
        np.testing.assert_array_equal(x["numeric"].numpy().ravel(), labels.numpy())


@pytest.mark.parametrize("overrides, message", [
    (["model.name=cnn"], "model.name cnn is an image model but image.column is not set"),
    (["train.cutmix_alpha=1.0"], "train.cutmix_alpha mixes image patches"),
    (["model.backbone.head_epochs=3"], "model.backbone.weights and model.backbone.head_epochs apply to backbones"),
    (["image.size=[28]"], "image.size: give \\[height, width\\]"),
    (["image.tta.views=[identity, spin]"], "image.tta.views.1"),
    (["image.augment.rotation=200"], "image.augment.rotation"),
])
def test_image_config_errors(overrides, message):
    from pipeline.config_files import load_config
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config("diamonds", overrides)


def test_head_epochs_must_leave_epochs_for_the_unfrozen_stage():
    from pipeline.config_files import load_config
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.backbone.head_epochs \(5\) must be below train.epochs \(5\)"):
        load_config("mnist", ["model.name=mobilenetv2", "model.backbone.head_epochs=5", "train.epochs=5"])
