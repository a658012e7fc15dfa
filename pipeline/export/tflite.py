"""Keras model → TFLite bytes (float32, float16, dynamic-range, full INT8), and running them with
the LiteRT interpreter (``ai-edge-litert``) through signature runners.

Signature runners address inputs by name: the interpreter's tensor order can differ from Keras'.
They also resize a None batch dimension (which conversion turns into 1) before each call, so
batched predictions and latencies use the real batch. INT8 inputs and outputs are quantized and
dequantized here with the tensor's own scale and zero point; integer inputs (category codes for
embeddings) stay int32.
"""
from __future__ import annotations

import time

import numpy as np

from ..errors import ConfigError

PTQ_KINDS = ("float32", "float16", "dynamic", "int8")


def convert(model, kind: str, representative: dict[str, np.ndarray] | None = None, int8_io: bool = True,
            allow_float_fallback: bool = True, per_channel: bool = True) -> bytes:
    """``representative``: preprocessed training rows (input name → array), INT8 calibration."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if kind == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif kind == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif kind == "int8":
        if not representative or not len(next(iter(representative.values()))):
            raise ConfigError("export int8: the representative dataset is empty; it needs training rows "
                              "(export.representative_rows > 0 and a fold with training data).")
        names = [t.name.split(":")[0] for t in model.inputs]
        n = len(next(iter(representative.values())))

        def calibration():
            # By input name: the converter's input order need not be Keras' (sorted) order.
            for i in range(n):
                yield {name: representative[name][i:i + 1] for name in names}

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = calibration
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        # The converter's only switch for per-tensor weight scales is this private attribute.
        conv._experimental_disable_per_channel = not per_channel
    elif kind != "float32":
        raise ConfigError(f"export: unknown conversion {kind!r}. Valid: {list(PTQ_KINDS)}")
    try:
        return conv.convert()
    except Exception as exc:  # the converter raises its own ConverterError with the op that failed
        if kind == "int8" and allow_float_fallback:
            # Some ops have no integer kernel: keep them in float, the rest INT8.
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
            return conv.convert()
        first = str(exc).strip().splitlines()[0][:300]
        raise ConfigError(f"export {kind}: the model cannot be converted integer-only ({first}). Set "
                          f"export.allow_float_fallback=true to keep such layers in float.") from None


class LiteModel:
    """A .tflite model in the LiteRT interpreter, called with the Keras input dict."""

    def __init__(self, content: bytes, threads: int = 1, xnnpack: bool = True):
        from ..versions import require

        require("ai-edge-litert")
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.interpreter = Interpreter(model_content=content, num_threads=threads,
                                       experimental_op_resolver_type=resolver)
        self.runner = self.interpreter.get_signature_runner()
        self.inputs = self.runner.get_input_details()
        self.outputs = self.runner.get_output_details()

    def dtypes(self) -> dict[str, str]:
        return {**{f"in:{k}": np.dtype(v["dtype"]).name for k, v in self.inputs.items()},
                **{f"out:{k}": np.dtype(v["dtype"]).name for k, v in self.outputs.items()}}

    def _feed(self, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {}
        for name, detail in self.inputs.items():
            v = np.asarray(x[name])
            dtype = np.dtype(detail["dtype"])
            scale, zero = detail["quantization"]
            if dtype in (np.int8, np.uint8) and scale:
                info = np.iinfo(dtype)
                v = np.clip(np.round(v / scale + zero), info.min, info.max)
            feed[name] = v.astype(dtype)
        return feed

    def __call__(self, x: dict[str, np.ndarray]) -> np.ndarray:
        (name, detail), = self.outputs.items()
        out = self.runner(**self._feed(x))[name].astype(np.float64)
        scale, zero = detail["quantization"]
        if np.dtype(detail["dtype"]) in (np.int8, np.uint8) and scale:
            out = (out - zero) * scale
        return out

    def predict(self, x: dict[str, np.ndarray], batch_size: int = 1024) -> np.ndarray:
        n = len(next(iter(x.values())))
        return np.concatenate([self({k: v[i:i + batch_size] for k, v in x.items()}) for i in range(0, n, batch_size)])

    def timings_ms(self, x: dict[str, np.ndarray], batch: int, runs: int = 50) -> list[float]:
        """Milliseconds of each of ``runs`` calls on ``batch`` rows (after a warm-up call)."""
        sample = {k: np.resize(v, (batch,) + v.shape[1:]) for k, v in x.items()}
        feed = self._feed(sample)
        self.runner(**feed)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            self.runner(**feed)
            times.append((time.perf_counter() - t) * 1000)
        return times


def delegation(content: bytes) -> dict:
    """How XNNPACK took the model: its partitions and how many of the model's nodes run inside them.

    LiteRT has no public accessor for this. After the first run the op details list every original
    node and, appended, one DELEGATE node per partition with the tensors it reads. A node runs
    inside a partition when all its inputs are read by that partition or made inside it, and the
    partition does not read its outputs (those would be made outside, by the node itself)."""
    m = LiteModel(content, xnnpack=True)
    m.runner(**{k: np.zeros([1, *v["shape"][1:]], v["dtype"]) for k, v in m.inputs.items()})
    ops = m.interpreter._get_ops_details()
    is_delegate = ["DELEGATE" in str(o.get("op_name", "")).upper() for o in ops]
    delegates = [o for o, d in zip(ops, is_delegate) if d]
    nodes = [o for o, d in zip(ops, is_delegate) if not d]
    inside = set()
    for partition in delegates:
        read = {int(t) for t in partition["inputs"]}
        made = set()
        for i, node in enumerate(nodes):  # op details come in execution order
            ins = {int(t) for t in node["inputs"] if t >= 0}
            outs = {int(t) for t in node["outputs"]}
            if i not in inside and ins <= read | made and not outs & read:
                made |= outs
                inside.add(i)
    return {"nodes": len(nodes), "xnnpack_partitions": len(delegates), "delegated_nodes": len(inside)}
