"""The small Vision Transformer: shapes from the image size (no upscaling of tiny images), a safe
load of its saved model, and its TFLite conversions agreeing with the Keras model."""
import numpy as np
import pytest


def _vit(image, **kw):
    from pipeline.config import ViTConfig
    from pipeline.models import get_builder
    from pipeline.preprocessing.table import InputSpec

    return get_builder("vit")(InputSpec(0, [], image), ViTConfig(dim=16, depth=2, heads=2, stem=[8], **kw), 10,
                              "multiclass")


@pytest.mark.parametrize("image, tokens", [((28, 28, 1), 49), ((8, 8, 1), 16), ((14, 14, 3), 49), ((32, 24, 3), 48)])
def test_vit_tokens_follow_the_image_size(image, tokens):
    model = _vit(image)
    assert model.get_layer("tokens").output_shape == (None, tokens, 16)
    assert model.get_layer("positions").get_weights()[0].shape == (1, tokens, 16)
    x = np.random.default_rng(0).uniform(0, 255, (3, *image)).astype(np.float32)
    out = model.predict({"image": x}, verbose=0)
    assert out.shape == (3, 10) and np.isfinite(out).all()


def test_vit_config_checks():
    from pydantic import ValidationError

    from pipeline.config import ViTConfig
    from pipeline.models.vit import patch_size

    with pytest.raises(ValidationError, match="multiple of heads"):
        ViTConfig(dim=30, heads=4)
    assert patch_size((28, 28), None) == 4 and patch_size((8, 8), None) == 2 and patch_size((14, 14), None) == 2 and patch_size((8, 8), 2) == 2
    with pytest.raises(ValueError, match="larger than the image"):
        patch_size((8, 8), 9)


def test_vit_saves_loads_safely_and_converts_to_tflite(tmp_path):
    import tf_keras as keras

    from pipeline.export.tflite import LiteModel, convert

    model = _vit((14, 14, 1))
    x = {"image": np.random.default_rng(1).uniform(0, 255, (32, 14, 14, 1)).astype(np.float32)}
    ref = model.predict(x, verbose=0)
    model.save(tmp_path / "vit.keras")
    loaded = keras.models.load_model(tmp_path / "vit.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), ref, atol=1e-6)
    np.testing.assert_allclose(LiteModel(convert(model, "float32", x)).predict(x), ref, atol=1e-5)
    int8 = LiteModel(convert(model, "int8", x)).predict(x)
    assert int8.shape == ref.shape and np.isfinite(int8).all()
    assert np.corrcoef(int8.ravel(), ref.ravel())[0, 1] > 0.9


@pytest.mark.slow
def test_a_vit_run_trains_predicts_and_exports_int8(tiny_comp, tmp_path):
    import json

    import pandas as pd

    from pipeline import export_run, load_run, run_competition

    cfg = tiny_comp("mnist", train_rows=80, test_rows=20)
    small = ["model.name=vit", "model.vit.dim=16", "model.vit.depth=1", "model.vit.heads=2", "model.vit.stem=[8]",
             "train.epochs=2", "cv.folds=2", "image.tta.views=[identity]", "diagnostics.report=false",
             "diagnostics.importance=false", "diagnostics.adversarial=false"]
    result = run_competition(cfg, small, output_dir=tmp_path, run_name="v")
    assert result.scores["member_info"]["vit"] and 0 <= result.scores["cv"] <= 1
    run = load_run(result.run_dir)
    test = pd.read_csv(cfg.parent / "data" / "test.csv.gz", dtype={"id": str})
    pred = run.predict(test, image_dir=cfg.parent / "data" / "test")
    saved = pd.read_csv(result.run_dir / "test_pred.csv", dtype={"id": str})
    cols = [c for c in saved.columns if c.startswith("p_")]
    np.testing.assert_allclose(pred[cols].to_numpy(), saved[cols].to_numpy(), atol=1e-5)
    out = export_run(cfg, "v", ["int8"], overrides=small + ["export.latency_runs=5", "export.representative_rows=20"],
                     output_dir=tmp_path)
    report = json.loads((out / "export_report.json").read_text())
    assert (out / "int8.tflite").is_file() and np.isfinite(report["artifacts"][0]["valid"])
