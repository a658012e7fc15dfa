"""Float-exact rescalings of a trained model that make its INT8 conversion more accurate.

INT8 gives each activation tensor one scale (and, with per-tensor weights, each kernel one scale).
Two places in our models waste most of those 256 levels, and both can be fixed by moving a factor
from one layer into the next, which leaves the float model's outputs unchanged:

1. Entity embeddings concatenated with the numeric block. ``Concatenate`` forces one scale on all
   its inputs; standardized numeric columns span a few units while embedding values span a few
   tenths, so the embeddings got ~20 levels (diamonds: most of INT8's RMSE loss). Each embedding
   column is scaled up to the numeric block's range, and the next Dense's matching kernel rows
   are divided by the same factor.
2. Cross-layer equalization (Nagel et al., 2019, "Data-free quantization through weight
   equalization and bias correction"): for Dense → ReLU/linear → Dense, output channel c of the
   first layer is divided by s_c and input row c of the second multiplied by it, with s_c chosen
   so both have the same weight range. ReLU(x / s) = ReLU(x) / s for s > 0, so this is exact.
   It lets one scale per kernel (``per_channel=false``, a smaller file) lose little.

Written here: TFLite and tfmot have no equalization pass (AIMET has one, but not for tf_keras).
Layers are found through the functional model's config (which layer feeds which), so any of our
model families works; a model this does not apply to is returned unchanged.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("pipeline")

# Positively homogeneous activations: f(x / s) = f(x) / s for s > 0.
HOMOGENEOUS = ("relu", "linear")
# Layers that pass values through unchanged (at inference) or only reshape them.
PASS_THROUGH = ("Dropout", "Flatten", "Reshape")


def _graph(model) -> tuple[dict, dict]:
    """(layer name → names of the layers it reads, layer name → names of the layers reading it)."""
    parents = {}
    for spec in model.get_config()["layers"]:
        names = []
        for node in spec["inbound_nodes"]:
            entries = node if isinstance(node, list) else node.get("args", [])
            for entry in entries:
                if isinstance(entry, list) and entry and isinstance(entry[0], str):
                    names.append(entry[0])
        parents[spec["name"]] = names
    children = {name: [] for name in parents}
    for name, ps in parents.items():
        for p in ps:
            children.setdefault(p, []).append(name)
    return parents, children


def _activation(layer) -> str | None:
    kind = type(layer).__name__
    if kind == "Activation" or kind == "Dense":
        act = layer.get_config().get("activation")
        return act if isinstance(act, str) else None
    if kind == "ReLU":
        cfg = layer.get_config()
        plain = cfg.get("max_value") is None and not cfg.get("negative_slope") and not cfg.get("threshold")
        return "relu" if plain else None
    return "linear" if kind in PASS_THROUGH else None


def _next_dense(model, name: str, children: dict):
    """The Dense that ``name``'s output reaches through single-consumer homogeneous layers only."""
    while True:
        kids = children.get(name, [])
        if len(kids) != 1:
            return None
        layer = model.get_layer(kids[0])
        if type(layer).__name__ == "Dense":
            return layer
        if _activation(layer) not in HOMOGENEOUS:
            return None
        name = layer.name


def _embedding_spans(model, concat, parents: dict) -> dict[str, tuple[int, int]]:
    """Embedding layer name → its columns in ``concat``'s output (embeddings reached through
    Flatten/Reshape only)."""
    spans, start = {}, 0
    for name, tensor in zip(parents[concat.name], concat.input):
        width = int(tensor.shape[-1])
        layer = model.get_layer(name)
        while type(layer).__name__ in ("Flatten", "Reshape") and len(parents[layer.name]) == 1:
            layer = model.get_layer(parents[layer.name][0])
        if type(layer).__name__ == "Embedding" and layer.output_dim == width:
            spans[layer.name] = (start, start + width)
        start += width
    return spans


def scale_embeddings(model, representative: dict[str, np.ndarray]) -> int:
    """Step 1, in place. Returns how many embedding layers were rescaled."""
    import tf_keras as keras

    parents, children = _graph(model)
    done = 0
    for concat in [l for l in model.layers if type(l).__name__ == "Concatenate"]:
        dense = _next_dense(model, concat.name, children)
        spans = _embedding_spans(model, concat, parents)
        if dense is None or not spans:
            continue
        features = keras.Model(model.inputs, concat.output).predict(representative, verbose=0, batch_size=1024)
        other = np.ones(features.shape[-1], bool)
        for a, b in spans.values():
            other[a:b] = False
        # The range the other inputs give the concatenation (all embeddings: the widest of them).
        pool = features[:, other] if other.any() else features
        lo, hi = float(pool.min()), float(pool.max())
        kernel, *bias = dense.get_weights()
        for name, (a, b) in spans.items():
            emb = model.get_layer(name)
            table = emb.get_weights()[0]
            t_lo, t_hi = table.min(0), table.max(0)
            # Largest factor that keeps each column inside [lo, hi]; where a sign is missing on the
            # other side, match the widths instead.
            with np.errstate(divide="ignore", invalid="ignore"):
                up = np.where(t_hi > 0, hi / t_hi, np.inf) if hi > 0 else np.where(t_hi > 0, 0, np.inf)
                down = np.where(t_lo < 0, lo / t_lo, np.inf) if lo < 0 else np.where(t_lo < 0, 0, np.inf)
                k = np.minimum(up, down)
                width = (hi - lo) / np.maximum(t_hi - t_lo, 1e-12)
            k = np.where(np.isfinite(k) & (k > 0), k, width)
            k = np.where(np.isfinite(k) & (k > 0), k, 1.0).astype(table.dtype)
            emb.set_weights([table * k])
            kernel[a:b] = kernel[a:b] / k[:, None]
            done += 1
        dense.set_weights([kernel, *bias])
    return done


def cross_layer(model, iterations: int = 20) -> int:
    """Step 2, in place. Returns how many Dense pairs were equalized."""
    _, children = _graph(model)
    pairs = []
    for layer in model.layers:
        if type(layer).__name__ == "Dense" and _activation(layer) in HOMOGENEOUS:
            nxt = _next_dense(model, layer.name, children)
            if nxt is not None:
                pairs.append((layer, nxt))
    for _ in range(iterations):  # pairs share layers in a chain: alternate until the ranges settle
        for first, second in pairs:
            k1, *b1 = first.get_weights()
            k2, *b2 = second.get_weights()
            r1, r2 = np.abs(k1).max(0), np.abs(k2).max(1)
            s = np.ones_like(r1)
            ok = (r1 > 0) & (r2 > 0)
            s[ok] = np.sqrt(r1[ok] / r2[ok])
            first.set_weights([k1 / s, *[b / s for b in b1]])
            second.set_weights([k2 * s[:, None], *b2])
    return len(pairs)


def equalize(model, representative: dict[str, np.ndarray], rtol: float = 1e-3):
    """Both steps on ``model`` (in place: pass a fresh copy). If the float outputs moved by more
    than ``rtol`` of their spread (an architecture this module does not know), the original
    weights are put back and a warning says so."""
    before = model.get_weights()
    ref = model.predict(representative, verbose=0, batch_size=1024)
    n_emb = scale_embeddings(model, representative)
    n_pairs = cross_layer(model)
    out = model.predict(representative, verbose=0, batch_size=1024)
    moved = float(np.abs(out - ref).max() / max(float(np.ptp(ref)), 1e-12))
    if moved > rtol:
        model.set_weights(before)
        log.warning("export: equalization changed the float model's outputs by %.2g of their range; "
                    "it was left out (set export.equalize=false to silence this)", moved)
        return model
    log.info("  equalized for INT8: %d embedding layers rescaled, %d Dense pairs (float outputs within %.1g)",
             n_emb, n_pairs, moved)
    return model
