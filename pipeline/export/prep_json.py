"""The preprocessing a model expects outside it, as a small JSON file, so an exported model can be
served without this pipeline (or scikit-learn), and ``apply`` — a NumPy reading of that JSON,
which the tests hold against the pipeline's own transform.

Format (``preprocessing.json``):
- ``inputs``: the model's input names: ``numeric`` (float32, n x width) and ``cat__<col>`` (int32).
- ``numeric``: a list of blocks whose outputs are concatenated, in order, into the ``numeric`` input:
  - ``{"kind": "scale", "columns", "impute", "method", ...}``: values not finite or listed in
    ``missing_values`` are missing and take ``impute``; then ``method``:
    standardize ``(x - mean) / scale``; minmax ``x * scale + min``; robust ``(x - center) / scale``
    then ``x / sqrt(1 + (x / 3)^2)``; none; rankgauss (``quantiles``/``references``, see ``_rankgauss``);
    ple (standardize, then per column the degree-1 hat functions at ``knots``, x clamped to the knots).
  - ``{"kind": "missing", "columns"}``: 1.0 where the raw value is missing.
  - ``{"kind": "onehot", "column", "categories", "infrequent"}``: one column per category, then one
    for the infrequent (rare) ones if any; unseen categories go there, or nowhere.
  - ``{"kind": "ordinal", ..., "mean", "scale"}``: the category's code (unseen -1, rare last), standardized.
  - ``{"kind": "target", "column", "categories", "encodings", "default", "mean", "scale"}``: the
    category's target encoding (``encodings[j][i]``: output j of category i; unseen: ``default``),
    standardized; one column per class for multiclass, else one.
  - ``{"kind": "frequency", "column", "counts", "mean", "scale"}``: log(1 + the category's training
    count, 0 if unseen), standardized.
- ``embeddings``: ``{column: {"codes": {category: index}, "infrequent": [...], "infrequent_index"}}``,
  unseen categories index 0.
Categories are strings; whole floats lose their ".0"; missing values are the category "__missing__".
"""
from __future__ import annotations

import json

import numpy as np
from scipy.special import ndtri

from ..preprocessing.categorical import MISSING

_BOUND = 1e-7  # scikit-learn's QuantileTransformer BOUNDS_THRESHOLD


def _codes(encoder) -> tuple[list[str], list[str]]:
    """(frequent categories in code order, infrequent categories) of a fitted OneHot/OrdinalEncoder."""
    cats = [str(c) for c in encoder.categories_[0]]
    rare = getattr(encoder, "infrequent_categories_", [None])[0]
    rare = [] if rare is None else [str(c) for c in rare]
    return [c for c in cats if c not in rare], rare


def _scale_block(name, pipe, cols, missing_values) -> dict:
    imputer, scaler = pipe.steps[1][1], pipe.steps[2][1]
    block = {"kind": "scale", "columns": list(cols), "method": name.removeprefix("num_").split(".")[0],
             "impute": imputer.statistics_.tolist(),
             "missing_values": {c: missing_values.get(c, []) for c in cols}}
    method = block["method"]
    if method == "standardize":
        block.update(mean=scaler.mean_.tolist(), scale=scaler.scale_.tolist())
    elif method == "minmax":
        block.update(min=scaler.min_.tolist(), scale=scaler.scale_.tolist())
    elif method == "robust":
        robust = scaler.steps[0][1]
        block.update(center=robust.center_.tolist(), scale=robust.scale_.tolist())
    elif method == "rankgauss":
        block.update(quantiles=scaler.quantiles_.T.tolist(), references=scaler.references_.tolist())
    elif method == "ple":
        block.update(mean=scaler.scaler_.mean_.tolist(), scale=scaler.scaler_.scale_.tolist(),
                     knots=[None if s is None else s.bsplines_[0].t[1:-1].tolist() for s in scaler.splines_])
    return block


def describe(pre, missing_values: dict | None = None) -> dict:
    """A fitted TabularPreprocessor → the JSON-able description above."""
    missing_values = missing_values or {}
    blocks = []
    if pre.dense_ is not None:
        for name, fitted, cols in pre.dense_.transformers_:
            if name == "remainder":
                continue
            if name.startswith("num_"):
                blocks.append(_scale_block(name, fitted, cols, missing_values))
            elif name.split(".")[0] == "missing":
                idx = fitted.steps[1][1].features_
                blocks.append({"kind": "missing", "columns": [cols[i] for i in idx],
                               "missing_values": {cols[i]: missing_values.get(cols[i], []) for i in idx}})
            elif name.startswith("onehot"):
                frequent, rare = _codes(fitted)
                blocks.append({"kind": "onehot", "column": cols[0], "categories": frequent, "infrequent": rare,
                               "missing_values": missing_values.get(cols[0], [])})
            elif name.startswith("ordinal"):
                encoder, scaler = fitted.steps[0][1], fitted.steps[1][1]
                frequent, rare = _codes(encoder)
                blocks.append({"kind": "ordinal", "column": cols[0], "categories": frequent, "infrequent": rare,
                               "mean": float(scaler.mean_[0]), "scale": float(scaler.scale_[0]),
                               "missing_values": missing_values.get(cols[0], [])})
            elif name.startswith("target"):
                encoder, scaler = fitted.steps[0][1], fitted.steps[1][1]
                blocks.append({"kind": "target", "column": cols[0],
                               "categories": [str(c) for c in encoder.categories_[0]],
                               "encodings": [np.asarray(e).tolist() for e in encoder.encodings_],
                               "default": np.atleast_1d(encoder.target_mean_).tolist(),
                               "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
                               "missing_values": missing_values.get(cols[0], [])})
            elif name.startswith("frequency"):
                blocks.append({"kind": "frequency", "column": cols[0], "counts": dict(fitted.counts_),
                               "mean": fitted.mean_, "scale": fitted.scale_,
                               "missing_values": missing_values.get(cols[0], [])})
            else:  # a block this format cannot describe must not be left out silently
                raise ValueError(f"preprocessing.json cannot describe the {name} block")
    embeddings = {}
    for col, encoder in pre.embedders_.items():
        frequent, rare = _codes(encoder)
        embeddings[col] = {"codes": {c: i + 1 for i, c in enumerate(frequent)}, "infrequent": rare,
                           "infrequent_index": len(frequent) + 1 if rare else None,
                           "missing_values": missing_values.get(col, [])}
    inputs = (["numeric"] if pre.numeric_dim_ else []) + [f"cat__{c}" for c in pre.embedders_]
    return {"format": "pipeline-preprocessing/1", "inputs": inputs, "numeric_dim": pre.numeric_dim_,
            "numeric": blocks, "embeddings": embeddings, "missing_category": MISSING}


# ----------------------------------------------------------------------------- the reference reader


def _numbers(values, missing) -> np.ndarray:
    x = np.array([np.nan if (v is None or v in missing) else v for v in values], dtype=np.float64)
    return np.where(np.isfinite(x), x, np.nan)


def _category(v, missing) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v in missing:
        return MISSING
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _rankgauss(x, quantiles, references):
    q, r = np.asarray(quantiles), np.asarray(references)
    out = 0.5 * (np.interp(x, q, r) - np.interp(-x, -q[::-1], -r[::-1]))
    out = np.where(x + _BOUND > q[-1], 1.0, np.where(x - _BOUND < q[0], 0.0, out))
    lo = ndtri(_BOUND - np.spacing(1))
    return np.clip(ndtri(out), lo, -lo)


def _hats(x, knots):
    k = np.asarray(knots)
    x = np.clip(x, k[0], k[-1])
    out = np.zeros((len(x), len(k)))
    for j in range(len(k)):
        if j > 0:
            left = (x >= k[j - 1]) & (x <= k[j])
            out[left, j] = (x[left] - k[j - 1]) / (k[j] - k[j - 1])
        if j < len(k) - 1:
            right = (x >= k[j]) & (x <= k[j + 1])
            out[right, j] = np.maximum(out[right, j], (k[j + 1] - x[right]) / (k[j + 1] - k[j]))
        if j == len(k) - 1:
            out[x == k[j], j] = 1.0
    return out


def apply(spec: dict | str, rows: dict[str, list] | object) -> dict[str, np.ndarray]:
    """Raw rows (a DataFrame or column → values) → the model's inputs, from the JSON alone."""
    spec = json.loads(spec) if isinstance(spec, str) else spec
    col = (lambda c: list(rows[c])) if isinstance(rows, dict) else (lambda c: rows[c].tolist())
    parts = []
    for b in spec["numeric"]:
        if b["kind"] == "scale":
            for j, c in enumerate(b["columns"]):
                x = _numbers(col(c), b["missing_values"][c])
                x = np.where(np.isnan(x), b["impute"][j], x)
                m = b["method"]
                if m == "standardize":
                    parts.append(((x - b["mean"][j]) / b["scale"][j])[:, None])
                elif m == "minmax":
                    parts.append((x * b["scale"][j] + b["min"][j])[:, None])
                elif m == "robust":
                    z = (x - b["center"][j]) / b["scale"][j]
                    parts.append((z / np.sqrt(1 + (z / 3) ** 2))[:, None])
                elif m == "rankgauss":
                    parts.append(_rankgauss(x, b["quantiles"][j], b["references"])[:, None])
                elif m == "none":
                    parts.append(x[:, None])
                elif m == "ple":
                    parts.append(((x - b["mean"][j]) / b["scale"][j])[:, None])
            if b["method"] == "ple":  # the hat features follow all the block's standardized columns
                for j, c in enumerate(b["columns"]):
                    if b["knots"][j] is not None:
                        x = _numbers(col(c), b["missing_values"][c])
                        parts.append(_hats(np.where(np.isnan(x), b["impute"][j], x), b["knots"][j]))
        elif b["kind"] == "missing":
            for c in b["columns"]:
                parts.append(np.isnan(_numbers(col(c), b["missing_values"][c]))[:, None].astype(np.float64))
        else:
            values = [_category(v, b["missing_values"]) for v in col(b["column"])]
            if b["kind"] == "onehot":
                width = len(b["categories"]) + bool(b["infrequent"])
                out = np.zeros((len(values), width))
                index = {c: i for i, c in enumerate(b["categories"])}
                for r, v in enumerate(values):
                    if v in index:
                        out[r, index[v]] = 1.0
                    elif b["infrequent"]:
                        out[r, -1] = 1.0
                parts.append(out)
            elif b["kind"] == "target":  # one column per encoding (per class for multiclass)
                index = {c: i for i, c in enumerate(b["categories"])}
                enc = np.asarray(b["encodings"]).T  # (categories, outputs)
                known = np.array([index.get(v, -1) for v in values])
                out = np.where(known[:, None] >= 0, enc[np.maximum(known, 0)], np.asarray(b["default"])[None, :])
                parts.append((out - np.asarray(b["mean"])) / np.asarray(b["scale"]))
            elif b["kind"] == "frequency":
                counts = np.array([b["counts"].get(v, 0) for v in values], dtype=np.float64)
                parts.append(((np.log1p(counts) - b["mean"]) / b["scale"])[:, None])
            else:
                index = {c: i for i, c in enumerate(b["categories"])}
                rare = set(b["infrequent"])
                codes = np.array([index.get(v, len(index) if v in rare else -1) for v in values], dtype=np.float64)
                parts.append(((codes - b["mean"]) / b["scale"])[:, None])
    out = {}
    if spec["numeric_dim"]:
        out["numeric"] = np.hstack(parts).astype(np.float32)
    for c, e in spec["embeddings"].items():
        rare = set(e["infrequent"])
        values = [_category(v, e["missing_values"]) for v in col(c)]
        out[f"cat__{c}"] = np.array([[e["codes"].get(v, e["infrequent_index"] if v in rare else 0)] for v in values],
                                    dtype=np.int32)
    return out
