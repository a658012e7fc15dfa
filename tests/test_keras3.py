"""Keras 3 installed beside tf_keras, as on Kaggle's image (TensorFlow 2.16+ depends on keras 3):
the pipeline uses tf_keras alone, a notebook's own ``import keras`` still gets Keras 3 whichever
is imported first, and a run's saved and exported models load in such a process."""
import ast
import json
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest

from conftest import ROOT

KERAS3 = metadata.version("keras") if any(d.metadata["Name"] == "keras" for d in metadata.distributions()) else None
needs_keras3 = pytest.mark.skipif(KERAS3 is None or not KERAS3.startswith("3"), reason="keras 3 is not installed")


def test_the_pipeline_never_imports_keras_3_or_tf_keras_through_tensorflow():
    found = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: import {n}" for n in names if n == "keras" or n.startswith("keras.")]
            if isinstance(node, ast.Attribute) and node.attr == "keras" and getattr(node.value, "id", "") == "tf":
                found.append(f"{path.name}:{node.lineno}: tf.keras")
    assert found == []


def _python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_keras3
@pytest.mark.parametrize("first", ["keras", "pipeline"])
def test_a_notebooks_import_keras_still_gets_keras_3(first):
    got = _python(f"""
        import json
        import {first}
        import keras, pipeline, tf_keras
        from pipeline.training import fold  # the module that trains (TensorFlow loaded)
        print(json.dumps({{"keras": keras.__version__, "ours": fold.keras.__name__,
                          "tf_keras": tf_keras.__version__}}))
    """)
    assert got["keras"].startswith("3") and got["ours"] == "tf_keras" and got["tf_keras"].startswith("2.")


@needs_keras3
@pytest.mark.slow
def test_a_run_trains_exports_and_loads_with_keras_3_imported_first(tmp_path):
    got = _python(f"""
        import json
        from pathlib import Path
        import keras  # the notebook's Keras 3, imported before the pipeline
        import numpy as np, pandas as pd
        import pipeline, tf_keras
        from ai_edge_litert.interpreter import Interpreter
        from pipeline import export_run
        result = pipeline.run_competition("health_insurance", ["model.name=mlp", "model.mlp.hidden=[16]",
                                          "diagnostics.importance=false", "diagnostics.adversarial=false"],
                                          output_dir={str(tmp_path)!r}, smoke=True, run_name="k3")
        export_dir = export_run("health_insurance", result.run_dir, ["int8"], output_dir={str(tmp_path)!r})
        saved = sorted(result.run_dir.glob("folds/*/mlp/model_*.keras"))
        net = tf_keras.models.load_model(saved[0], compile=False, safe_mode=True)
        tflite = sorted(export_dir.rglob("*.tflite"))
        interpreter = Interpreter(model_path=str(tflite[0]))
        interpreter.allocate_tensors()
        run = pipeline.load_run(result.run_dir)
        rows = pd.read_csv(Path(run.info["data_dir"]) / "test.csv.gz")
        preds = run.predict(rows)
        print(json.dumps({{"keras": keras.__version__, "net": type(net).__module__, "tflite": len(tflite),
                          "inputs": len(interpreter.get_input_details()),
                          "finite": bool(np.isfinite(preds["whi"]).all())}}))
    """)
    assert got["keras"].startswith("3") and got["net"].startswith("tf_keras")
    assert got["tflite"] >= 1 and got["inputs"] >= 1 and got["finite"]
