"""train.strategy=multi_worker: one fold trained by two worker processes on this machine
(MultiWorkerMirroredStrategy from TF_CONFIG, ports on localhost) against the same fold trained by
one process: the same prediction shapes and a score within tolerance."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import FAST, ROOT

HELPER = ROOT / "tests" / "multiworker_fold.py"


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("localhost", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run(config, out, strategy, tf_config=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, str(HELPER), str(config), str(out), strategy], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_one_fold_on_two_workers_matches_one_worker(tiny_comp, tmp_path):
    try:
        ports = _free_ports(2)
    except OSError as exc:
        pytest.skip(f"no local ports can be opened here ({exc})")
    cfg = tiny_comp("diamonds", train_rows=400, test_rows=80)
    # FAST settings, baked into the config (the helper takes no --set).
    import yaml

    raw = yaml.safe_load(cfg.read_text())
    for item in FAST + ["train.epochs=6", "train.steps_per_execution=1"]:
        key, value = item.split("=", 1)
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    cfg.write_text(yaml.safe_dump(raw))

    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    workers = [_run(cfg, tmp_path / f"w{i}", "multi_worker", {"cluster": cluster, "task": {"type": "worker", "index": i}})
               for i in range(2)]
    single = _run(cfg, tmp_path / "single", "default")
    outputs = []
    for proc in workers + [single]:
        try:
            out, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for p in workers + [single]:
                p.kill()
            pytest.fail("a worker did not finish in 300 s")
        outputs.append(out)
        assert proc.returncode == 0, out[-3000:]
    assert "distribution: CollectiveAllReduceStrategy over 2 replicas" in outputs[0]  # MultiWorkerMirroredStrategy
    one = np.load(tmp_path / "single" / "result.npz")
    for i in range(2):
        two = np.load(tmp_path / f"w{i}" / "result.npz")
        assert two["oof"].shape == one["oof"].shape and two["test"].shape == one["test"].shape
        assert np.array_equal(two["valid_idx"], one["valid_idx"])
        # Two workers train with twice the global batch (each worker a batch per step): the same
        # model family, not the same numbers; RMSE within 25% of one worker's.
        assert abs(float(two["score"]) - float(one["score"])) <= 0.25 * float(one["score"])
    # Both workers hold the same (all-reduced) model, so they predict the same.
    w0, w1 = (np.load(tmp_path / f"w{i}" / "result.npz") for i in range(2))
    assert np.allclose(w0["test"], w1["test"], rtol=1e-4, atol=1e-3)


def test_importing_the_pipeline_leaves_tensorflows_runtime_unstarted():
    """A multi-worker strategy must be created before TensorFlow's runtime starts; a tensor made
    when a module is imported starts it (a module-level tf.constant in datasets.py once broke
    every multi-worker run). Every module of the package is imported, then the runtime checked."""
    code = ("import pkgutil, importlib, pipeline\n"
            "for m in pkgutil.walk_packages(pipeline.__path__, 'pipeline.'):\n"
            "    importlib.import_module(m.name)\n"
            "from tensorflow.python.eager import context\n"
            "print(context.context()._context_handle is None)\n")  # private, but what 'started' means
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "True"
