"""Export: the preprocessing JSON reproduces the pipeline's inputs; TFLite conversions run in LiteRT."""
import json

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.data import load_competition
from pipeline.export.prep_json import apply, describe
from pipeline.preprocessing import TabularPreprocessor


@pytest.mark.parametrize("comp, overrides", [
    ("diamonds", []),
    ("health_insurance", []),  # ple numerics, auto (one-hot / embedding) categoricals
    ("diamonds", ["preprocessing.numeric=rankgauss", "preprocessing.categorical=onehot",
                  "preprocessing.missing_indicator=true", "preprocessing.min_count=30"]),
    ("diamonds", ["preprocessing.numeric=robust", "preprocessing.categorical=ordinal", "preprocessing.min_count=30"]),
    ("health_insurance", ["preprocessing.numeric=minmax", "preprocessing.categorical=embedding",
                          "preprocessing.min_count=40"]),
    ("health_insurance", ["preprocessing.numeric=none", "preprocessing.impute=constant"]),
])
def test_preprocessing_json_reproduces_the_pipeline_inputs(tiny_comp, comp, overrides):
    cfg_path = tiny_comp(comp, train_rows=400, test_rows=100)
    data = load_competition(load_config(cfg_path, overrides))
    pre = TabularPreprocessor(data.columns, data.cfg.preprocessing).fit(data.train.iloc[:300])
    missing = {c: s.missing_values for c, s in data.cfg.features.columns.items() if s.missing_values}
    spec = json.loads(json.dumps(describe(pre, missing)))  # through JSON text, as a server would read it
    raw = pd.read_csv(cfg_path.parent / "data" / "test.csv.gz")  # raw rows: 0 sizes not yet masked
    expected = pre.transform(data.test)
    got = apply(spec, raw)
    assert sorted(got) == sorted(expected) == sorted(spec["inputs"])
    for k in expected:
        assert got[k].dtype == expected[k].dtype and got[k].shape == expected[k].shape
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-5)


FAST_RUN = ["train.epochs=3", "cv.folds=2", "model.hidden=[16, 8]", "train.seeds=1"]


@pytest.mark.slow
@pytest.mark.parametrize("comp, overrides, agreement", [
    ("diamonds", FAST_RUN, 0.9),  # regression: correlation with the float model
    ("mnist", ["train.epochs=2", "cv.folds=2", "model.filters=[8, 16]", "model.convs_per_block=1",
               "model.hidden=[16]", "image.tta.views=[identity]"], 0.8),  # same predicted class
])
def test_every_artifact_converts_runs_and_agrees(tiny_comp, tmp_path, comp, overrides, agreement):
    from pipeline import run_competition
    from pipeline.export import export_run

    cfg = tiny_comp(comp, train_rows=200, test_rows=60)
    run_competition(cfg, overrides, output_dir=tmp_path, run_name="r")
    out = export_run(cfg, "r", overrides=overrides + ["export.latency_runs=5", "export.representative_rows=50"],
                     output_dir=tmp_path)
    assert {"float32.tflite", "float16.tflite", "dynamic.tflite", "int8.tflite", "preprocessing.json",
            "export_report.json", "report.md"} <= {p.name for p in out.iterdir()}
    report = json.loads((out / "export_report.json").read_text())
    rows = {r["artifact"]: r for r in report["artifacts"]}
    # float32 TFLite is the Keras model up to float rounding.
    assert abs(rows["float32"]["valid_delta"]) <= 1e-5 * abs(report["float_keras"]["valid"]) + 1e-6
    for r in rows.values():
        # Float artifacts agree almost exactly; INT8 of a barely trained tiny model (low-variance
        # predictions) less so: the stated floor. The benchmark holds the real models to the targets.
        floor = agreement if r["artifact"] == "int8" else 0.99
        assert r["valid_agreement"] >= floor and r["holdout_agreement"] >= floor
        assert r["latency_ms_1_xnnpack"] > 0 and r["latency_ms_256_no_delegate"] > 0 and r["gzip_bytes"] < r["bytes"]
    int8 = rows["int8"]["dtypes"]
    if comp == "diamonds":  # numerics int8, category codes int32 (embeddings), output int8
        assert int8["in:numeric"] == "int8" and int8["in:cat__cut"] == "int32" and int8["out:head"] == "int8"
    else:
        assert int8["in:image"] == "int8" and int8["out:head"] == "int8"
    assert rows["float32"]["dtypes"]["out:head"] == "float32"
    assert rows["int8"]["bytes"] < rows["float32"]["bytes"]
    prep = json.loads((out / "preprocessing.json").read_text())
    assert prep["output"]["task"] == ("regression" if comp == "diamonds" else "multiclass")
    assert (comp == "mnist") == ("image" in prep)


@pytest.mark.slow
def test_float_io_int8_and_bad_export_inputs(tiny_comp, tmp_path):
    from pipeline import run_competition
    from pipeline.errors import ConfigError, DataError
    from pipeline.export import export_run
    from pipeline.export.tflite import convert

    cfg = tiny_comp("health_insurance", train_rows=200, test_rows=60)
    run_competition(cfg, FAST_RUN, output_dir=tmp_path, run_name="r")
    out = export_run(cfg, "r", ["int8"], overrides=["export.int8_io=false", "export.latency_runs=5"],
                     output_dir=tmp_path)
    dtypes = json.loads((out / "export_report.json").read_text())["artifacts"][0]["dtypes"]
    assert dtypes["in:numeric"] == "float32" and dtypes["out:head"] == "float32"

    def refused(exc, pattern, **kw):
        with pytest.raises(exc, match=pattern):
            export_run(cfg, kw.pop("run", "r"), kw.pop("artifacts", ["int8"]), output_dir=tmp_path, **kw)

    before = sorted(p.name for p in (tmp_path / "health_insurance" / "r" / "export").iterdir())
    refused(ConfigError, r"--export qat8: unknown artifact. Valid: \['float32'", artifacts=["qat8"])
    refused(DataError, "--export-run nope: .* is not a finished run", run="nope")
    run_competition(cfg, ["model.name=hgb", "cv.folds=2"], output_dir=tmp_path, run_name="h")
    refused(DataError, "holds no Keras model", run="h")
    with pytest.raises(ConfigError, match="representative dataset is empty"):
        import tf_keras as keras

        convert(keras.models.load_model(next((tmp_path / "health_insurance" / "r" / "folds" / "fold_0").glob(
            "*.keras"))), "int8", {"numeric": np.zeros((0, 3), np.float32)})
    # A failed export leaves the previous export folder as it was, and no partial one.
    assert sorted(p.name for p in (tmp_path / "health_insurance" / "r" / "export").iterdir()) == before
    assert not (tmp_path / "health_insurance" / "r" / "export.partial").exists()


COMPRESSED = ["qat", "prune", "prune24", "cluster", "pqat", "cqat", "lowrank", "distill"]
COMPRESS_OPTS = ["export.latency_runs=5", "export.representative_rows=50", "export.finetune_epochs=1",
                 "export.student_epochs=3", "export.clusters=8", "export.sparsity=0.6",
                 "export.student_hidden=[8]", "export.student_filters=[4, 8]"]


@pytest.mark.slow
@pytest.mark.parametrize("comp, overrides", [
    ("diamonds", ["train.epochs=3", "cv.folds=2", "model.hidden=[32, 16]", "train.seeds=1"]),  # with embeddings
    ("mnist", ["train.epochs=2", "cv.folds=2", "model.filters=[8, 16]", "model.convs_per_block=1",
               "model.hidden=[16]", "image.tta.views=[identity]"]),
])
def test_compressed_artifacts_convert_run_and_keep_their_structure(tiny_comp, tmp_path, comp, overrides):
    from pipeline import run_competition
    from pipeline.export import export_run

    cfg = tiny_comp(comp, train_rows=160, test_rows=40)
    run_competition(cfg, overrides, output_dir=tmp_path, run_name="r")
    out = export_run(cfg, "r", COMPRESSED, overrides=overrides + COMPRESS_OPTS, output_dir=tmp_path)
    rows = {r["artifact"]: r for r in json.loads((out / "export_report.json").read_text())["artifacts"]}
    assert set(rows) == set(COMPRESSED) and all((out / f"{a}.tflite").is_file() for a in COMPRESSED)
    for r in rows.values():
        assert np.isfinite(r["valid"]) and r["dtypes"]["out:head"] == "int8"
    # QAT-converted models still predict what the float model does (a broken conversion once
    # predicted one class for every image).
    for name in ("qat", "cqat"):
        assert rows[name]["valid_agreement"] >= 0.8, (name, rows[name]["valid_agreement"])
    assert rows["prune"]["sparsity"] >= 0.6 - 0.02
    assert rows["prune24"]["two_four"] and rows["prune24"]["sparsity"] >= 0.45
    assert rows["cluster"]["max_unique_weights"] <= 8
    assert rows["lowrank"]["params"] <= rows["lowrank"]["float_params"]
    assert rows["distill"]["student_params"] < rows["distill"]["ensemble_float32_bytes"] / 4


def test_distillation_loss_uses_the_teachers_soft_targets():
    import tensorflow as tf

    from pipeline.export.compress import distillation_loss

    logits = tf.constant([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    y = np.eye(3, dtype=np.float32)[[0, 1]]
    teacher_a = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], np.float32)
    teacher_b = np.array([[0.1, 0.1, 0.8], [0.8, 0.1, 0.1]], np.float32)
    only_teacher = distillation_loss("multiclass", temperature=2.0, alpha=0.0)
    only_labels = distillation_loss("multiclass", temperature=2.0, alpha=1.0)
    a = float(only_teacher(np.hstack([y, teacher_a]), logits))
    b = float(only_teacher(np.hstack([y, teacher_b]), logits))
    assert b > a > 0  # a teacher that disagrees with the student costs more
    assert float(only_labels(np.hstack([y, teacher_a]), logits)) == pytest.approx(
        float(only_labels(np.hstack([y, teacher_b]), logits)))  # alpha=1: the teacher plays no part
    # A student that matches the teacher at temperature T has zero soft loss.
    matched = tf.math.log(tf.constant(teacher_a)) * 1.0
    assert float(only_teacher(np.hstack([y, teacher_a]), matched)) == pytest.approx(0, abs=1e-4)
    reg = distillation_loss("regression", 1.0, 0.5)
    assert float(reg(np.array([[1.0, 3.0]], np.float32), tf.constant([[3.0]]))) == pytest.approx(0.5 * 4)


def test_two_four_and_sparsity_helpers():
    from pipeline.export.compress import is_two_four

    k = np.array([[1, 0, 0, 2], [0, 3, 4, 0]], dtype=np.float32).T  # (inputs 4, outputs 2)
    assert is_two_four(k)
    k[2, 0] = 5.0
    assert not is_two_four(k)
    conv = np.zeros((3, 3, 8, 2), np.float32)  # Conv2D: blocks run along the input channels
    conv[..., 0:2, :] = 1.0
    conv[..., 4:6, :] = 1.0
    assert is_two_four(conv)
    conv[1, 1, 2, 0] = 1.0
    assert not is_two_four(conv)


def test_per_tensor_int8_is_smaller():
    from pipeline.config import ModelConfig
    from pipeline.export.tflite import LiteModel, convert
    from pipeline.models import get_builder
    from pipeline.preprocessing.table import InputSpec

    model = get_builder("mlp")(InputSpec(6, [("cat__a", 5, 3)]), ModelConfig(hidden=[64, 32]), 1)
    rng = np.random.default_rng(0)
    rep = {"numeric": rng.normal(size=(64, 6)).astype(np.float32), "cat__a": rng.integers(0, 5, (64, 1)).astype(np.int32)}
    channel, tensor = (convert(model, "int8", rep, per_channel=p) for p in (True, False))
    assert len(tensor) < len(channel)
    ref = model.predict(rep, verbose=0).ravel()
    assert np.corrcoef(ref, LiteModel(tensor).predict(rep).ravel())[0, 1] > 0.95
