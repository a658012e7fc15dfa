"""A trained fold on disk: what it holds, how it is saved, loaded and asked for predictions.

A fold folder holds everything needed to predict again without the run:

- ``model_<member>.keras`` (or ``.skops`` for a scikit-learn member): one per seed and checkpoint;
- ``preprocessing.skops``: the fold's fitted TabularPreprocessor, target transform, task, classes,
  feature names and image settings;
- ``predictions.npz``: the validation rows' positions and the OOF/test predictions (per member too);
- ``result.json``: the fold's score, epochs and time;
- ``history.csv``: every epoch of every seed's model (loss, val_loss, the metric, lr, seconds);
- ``tensorboard/`` with ``train.tensorboard``.

It is written under a temporary name and renamed when complete, so a killed run never leaves a
fold that looks finished. Every reader (CV resume, export, distillation, run-level prediction)
goes through ``FoldArtifact``; nothing else opens these files.

A run folder is data, never code: nothing in it is unpickled. Fitted preprocessing and
scikit-learn members are written with skops and read back only if every type in the file is on
``TRUSTED_TYPES`` (a crafted folder naming any other function or class is refused before anything
of it is built); Keras files load with ``safe_mode=True`` (no Lambda layers' code). A folder of the
older pickle format is refused with one line: train the run again.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..outputs import json_text
from ..models.heads import to_prediction

PREPROCESSING_FILE = "preprocessing.skops"
PREDICTIONS_FILE = "predictions.npz"
RESULT_FILE = "result.json"
HISTORY_FILE = "history.csv"
PICKLED = ("preprocessing.joblib", "model_*.joblib")  # the format before skops: never loaded

# Types a fold file may hold beyond skops' own trusted defaults (scikit-learn estimators, numpy
# arrays and builtins): ours, and what our preprocessing puts inside scikit-learn objects.
# tests/test_artifact.py fits every registered scaler, encoder and model and checks that this list
# covers them, so a new one cannot be forgotten.
TRUSTED_TYPES = [
    "numpy.dtype",
    "pipeline.config.PreprocessingConfig",
    "pipeline.preprocessing.table.InputSpec",
    "pipeline.preprocessing.table.TabularPreprocessor",
    "pipeline.preprocessing.table._to_nan",
    "pipeline.preprocessing.numeric.PiecewiseLinear",
    "pipeline.preprocessing.categorical.FrequencyEncoder",
    "pipeline.preprocessing.numeric.smooth_clip",
    "scipy.interpolate._bsplines.BSpline",
    "scipy.interpolate._bsplines._BSpline",  # the same spline's class in other scipy releases
    # ColumnTransformer's list of leftover column names, in scikit-learn 1.6 (the Kaggle image's).
    "sklearn.compose._column_transformer._RemainderColsList",
    "scipy._lib.array_api_compat.numpy._aliases.asarray",
    # HistGradientBoosting members: its fitted trees and the bound check it keeps. A partial's
    # target is a node of its own in the file, so it must be on this list too.
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
    "functools.partial",
    # TargetEncoder keeps its cross-fitting splitter (scikit-learn >= 1.9): plain settings, no code.
    "sklearn.model_selection._split.KFold",
    "sklearn.model_selection._split.StratifiedKFold",
]


def dump_trusted(obj, path: Path) -> None:
    import skops.io as sio

    sio.dump(obj, path)


def load_trusted(path: Path):
    """A skops file whose every type is trusted; one DataError naming the others if not."""
    import skops.io as sio

    try:
        untrusted = sorted(set(sio.get_untrusted_types(file=path)) - set(TRUSTED_TYPES))
    except Exception as exc:  # not a skops file at all (truncated, or something else)
        raise DataError(f"{path}: cannot be read as a fold file ({type(exc).__name__}); the run folder is "
                        f"damaged. Train the run again.") from None
    if untrusted:
        raise DataError(f"{path}: holds types this pipeline never writes ({', '.join(untrusted[:4])}); it was not "
                        f"made by this pipeline, so it is not loaded. Train the run yourself.")
    return sio.load(path, trusted=TRUSTED_TYPES)


def invert_target(pred: np.ndarray, target) -> np.ndarray:
    """Regression predictions back in the target's units (``target``: the fitted transform or None)."""
    return target.inverse_transform(pred.reshape(-1, 1)).ravel() if target is not None else pred


def to_output(raw: np.ndarray, task: str, target, clip: tuple[float, float] | None = None) -> np.ndarray:
    """A Keras model's raw output → the metrics' internal form, in the target's own units, within
    ``clip`` (the fold's training target range) when given."""
    return clip_target(invert_target(to_prediction(raw, task), target), clip)


def clip_target(pred: np.ndarray, clip: tuple[float, float] | None) -> np.ndarray:
    return pred if clip is None else np.clip(pred, clip[0], clip[1])


@dataclass
class FoldResult:
    name: str
    valid_idx: np.ndarray
    oof: np.ndarray  # the members' mean prediction for valid_idx, in the metric's internal form
    test: np.ndarray
    score: float
    best_epoch: int
    epochs: int
    seconds: float
    member_scores: dict[str, float] = field(default_factory=dict)
    members: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name → (oof, test)
    # Image competitions: (oof, test) of the identity view alone, i.e. without TTA.
    no_tta: tuple[np.ndarray, np.ndarray] | None = None
    score_no_tta: float | None = None
    history: list[dict] = field(default_factory=list)  # per epoch of each seed's model: history.csv
    # Under a time limit: train seconds, the slowest epoch and whether the limit cut it (not saved).
    timing: dict = field(default_factory=dict)

    def summary(self) -> dict:
        keys = ("name", "score", "best_epoch", "epochs", "seconds", "member_scores", "score_no_tta")
        return {k: getattr(self, k) for k in keys}

    @classmethod
    def load(cls, fold_dir: Path) -> "FoldResult":
        meta = json.loads((fold_dir / RESULT_FILE).read_text())
        arrays = np.load(fold_dir / PREDICTIONS_FILE)
        members = {m: (arrays[f"oof__{m}"], arrays[f"test__{m}"]) for m in meta["member_scores"]}
        no_tta = (arrays["no_tta_oof"], arrays["no_tta_test"]) if "no_tta_oof" in arrays else None
        return cls(valid_idx=arrays["valid_idx"], oof=arrays["oof"], test=arrays["test"], members=members,
                   no_tta=no_tta, **meta)

    @staticmethod
    def is_complete(fold_dir: Path) -> bool:
        return (fold_dir / RESULT_FILE).is_file()


class FoldArtifact:
    """A saved fold: its fitted preprocessing, target transform and member models."""

    def __init__(self, directory: Path, bundle: dict):
        self.dir = Path(directory)
        self.preprocessor = bundle["preprocessor"]
        self.target = bundle["target"]
        self.task = bundle["task"]
        self.classes = bundle["classes"]
        self.features = list(bundle["features"])
        self.image = bundle.get("image")  # the ImageConfig as a dict, for image competitions
        clip = bundle.get("target_clip")  # regression: the fold's training target range, or None
        self.clip = tuple(clip) if clip is not None else None
        self.blend_weight = float(bundle.get("blend_weight", 0.5))  # model.blend's share
        self._models = None

    # ------------------------------------------------------------------ disk

    @staticmethod
    def save(fold_dir: Path, members: dict, bundle: dict, result: FoldResult) -> None:
        """``members``: name → (Keras network, its weights) or (scikit-learn estimator, None)."""
        tmp = fold_dir.with_name(fold_dir.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for member, (net, weights) in members.items():
            if weights is None:  # a scikit-learn estimator
                dump_trusted(net, tmp / f"model_{member}.skops")
                continue
            net.set_weights(weights)
            net.save(tmp / f"model_{member}.keras")
        dump_trusted(bundle, tmp / PREPROCESSING_FILE)
        arrays = {"valid_idx": result.valid_idx, "oof": result.oof, "test": result.test}
        if result.no_tta is not None:
            arrays["no_tta_oof"], arrays["no_tta_test"] = result.no_tta
        for member, (oof, test) in result.members.items():
            arrays[f"oof__{member}"], arrays[f"test__{member}"] = oof, test
        np.savez(tmp / PREDICTIONS_FILE, **arrays)
        if result.history:
            import pandas as pd

            pd.DataFrame(result.history).to_csv(tmp / HISTORY_FILE, index=False)
        tensorboard = fold_dir.with_name(f"{fold_dir.name}.tensorboard")
        if tensorboard.is_dir():
            tensorboard.rename(tmp / "tensorboard")
        (tmp / RESULT_FILE).write_text(json_text(result.summary()))
        shutil.rmtree(fold_dir, ignore_errors=True)
        tmp.rename(fold_dir)  # the fold appears whole or not at all

    @classmethod
    def load(cls, fold_dir: Path) -> "FoldArtifact":
        fold_dir = Path(fold_dir)
        if any(next(fold_dir.glob(p), None) for p in PICKLED):
            raise DataError(f"{fold_dir}: a fold saved with pickle by an older version of the pipeline; pickles "
                            f"are never loaded (they can run code). Train the run again with this version.")
        if not FoldResult.is_complete(fold_dir) or not (fold_dir / PREPROCESSING_FILE).is_file():
            raise DataError(f"{fold_dir}: not a finished fold (no {RESULT_FILE} or {PREPROCESSING_FILE}).")
        bundle = load_trusted(fold_dir / PREPROCESSING_FILE)
        if not isinstance(bundle, dict) or not {"preprocessor", "target", "task", "classes", "features"} <= set(bundle):
            raise DataError(f"{fold_dir / PREPROCESSING_FILE}: not a fold's preprocessing bundle. Train the run again.")
        return cls(fold_dir, bundle)

    def result(self) -> FoldResult:
        return FoldResult.load(self.dir)

    @property
    def valid_idx(self) -> np.ndarray:
        return np.load(self.dir / PREDICTIONS_FILE)["valid_idx"]

    @property
    def keras_paths(self) -> list[Path]:
        return sorted(self.dir.glob("model_*.keras"))

    def load_keras(self, index: int = 0):
        """A fresh copy of the ``index``-th Keras member (export compresses copies in place)."""
        import tf_keras as keras

        path = self.keras_paths[index]
        try:
            return keras.models.load_model(path, safe_mode=True)
        except (ValueError, OSError) as exc:  # a Lambda layer's code, a damaged zip
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise DataError(f"{path}: the Keras model could not be loaded safely ({first}). Train the run "
                            f"again.") from None

    def models(self) -> list:
        """The members: Keras models, or scikit-learn estimators (loaded once)."""
        if self._models is None:
            self._models = [self.load_keras(i) for i in range(len(self.keras_paths))]
            self._models += [load_trusted(p) for p in sorted(self.dir.glob("model_*.skops"))]
        return self._models

    # ------------------------------------------------------------------ prediction

    def transform(self, frame, source: str = "rows") -> dict[str, np.ndarray]:
        """Raw rows → the model's inputs through the fold's fitted preprocessing."""
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise DataError(f"{source}: lacks column(s) {missing[:5]} that the model was trained on. Add them "
                            f"(missing values are fine).")
        return self.preprocessor.transform(frame)

    def predict(self, frame, image_paths=None, *, tta: bool = True, source: str = "rows") -> np.ndarray:
        """The mean over the fold's members of their predictions for ``frame`` (internal form,
        target units); with a blended scikit-learn model (``model.blend``), the Keras members'
        mean and it, weighted as in training. Image folds need ``image_paths`` (one per row) and average the run's TTA
        views unless ``tta`` is False."""
        from ..models.sklearn_models import predict as sklearn_predict
        from ..models.sklearn_models import to_matrix

        features = self.transform(frame, source)
        keras_preds, sklearn_preds = [], []
        for model in self.models():
            if not hasattr(model, "predict_on_batch"):  # a scikit-learn estimator
                sklearn_preds.append(clip_target(invert_target(
                    sklearn_predict(model, to_matrix(features)[0], self.task), self.target), self.clip))
                continue
            views = [to_output(model.predict(x, verbose=0), self.task, self.target, self.clip)
                     for x in self._datasets(features, image_paths, tta)]
            keras_preds.append(np.mean(views, axis=0))
        if keras_preds and sklearn_preds:  # model.blend: the Keras members, then the blended model's share
            w = self.blend_weight
            return (1 - w) * np.mean(keras_preds, axis=0) + w * np.mean(sklearn_preds, axis=0)
        return np.mean(keras_preds or sklearn_preds, axis=0)

    def _datasets(self, features, image_paths, tta: bool):
        """One dataset per TTA view (tabular folds: the rows once)."""
        from ..data.datasets import make_dataset

        if self.image is None:
            return [make_dataset(features, batch_size=4096)]
        if image_paths is None:
            raise DataError("this fold's model takes images: pass their file paths, one per row")
        from ..config import ImageConfig
        from ..data.images import batches, decoded_dataset

        cfg = ImageConfig(**self.image)
        decoded = decoded_dataset(np.asarray(image_paths), cfg, "")
        views = cfg.tta.views if tta else ["identity"]
        return [batches(decoded, features, None, cfg, batch_size=256, view=v) for v in views]


def load_fold_predictor(fold_dir: Path):
    """A function (raw DataFrame[, image file paths]) → predictions (the mean over the fold's
    members; no TTA), from a saved fold."""
    artifact = FoldArtifact.load(fold_dir)

    def predict(df, image_paths=None):
        return artifact.predict(df, image_paths, tta=False)

    return predict
