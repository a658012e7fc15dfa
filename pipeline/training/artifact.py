"""A trained fold on disk: what it holds, how it is saved, loaded and asked for predictions.

A fold folder holds everything needed to predict again without the run:

- ``<member>/`` for each member of the run (``mlp/``, ``hgb/``): ``member.skops`` (what the member
  is: its kind, target transform, clip range, image settings) and its models:
  ``model_<network>.keras`` (one per seed and checkpoint; ``model_best.keras`` by default, realmlp's
  5 best epochs ``model_best.keras`` to ``model_best5.keras``) or
  ``model.skops`` (a scikit-learn estimator); members.py reads and writes them;
- ``preprocessing.skops``: the fold's fitted TabularPreprocessor, task, classes, feature names and
  the member names;
- ``predictions.npz``: the validation rows' positions and each member's OOF/test predictions;
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
    "pipeline.preprocessing.blocks.DenseBlocks",
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
    score: float  # the fold's best member's score (the run's scores.json has the ensemble's per fold)
    best_epoch: int
    epochs: int
    seconds: float
    member_scores: dict[str, float] = field(default_factory=dict)  # member name → its score on the fold
    # member name → (OOF, test) predictions, in the metric's internal form and the target's units
    members: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    # A Keras member of several networks (seeds x checkpoints): "mlp/seed0_best" → score, predictions.
    detail_scores: dict[str, float] = field(default_factory=dict)
    details: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    # Image competitions: (oof, test) of the identity view alone, i.e. without TTA.
    no_tta: tuple[np.ndarray, np.ndarray] | None = None
    score_no_tta: float | None = None
    history: list[dict] = field(default_factory=list)  # per epoch of each Keras network: history.csv
    member_info: dict[str, dict] = field(default_factory=dict)  # each member's describe()
    # Under a time limit: train seconds, the slowest epoch and whether the limit cut it (not saved).
    timing: dict = field(default_factory=dict)

    def summary(self) -> dict:
        keys = ("name", "score", "best_epoch", "epochs", "seconds", "member_scores", "detail_scores", "score_no_tta",
                "member_info")
        return {k: getattr(self, k) for k in keys}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"valid_idx": self.valid_idx}
        if self.no_tta is not None:
            out["no_tta_oof"], out["no_tta_test"] = self.no_tta
        for key, (oof, test) in {**self.members, **self.details}.items():
            out[f"oof__{_key(key)}"], out[f"test__{_key(key)}"] = oof, test
        return out

    @classmethod
    def load(cls, fold_dir: Path) -> "FoldResult":
        meta = json.loads((fold_dir / RESULT_FILE).read_text())
        arrays = np.load(fold_dir / PREDICTIONS_FILE)

        def pairs(names):
            return {m: (arrays[f"oof__{_key(m)}"], arrays[f"test__{_key(m)}"]) for m in names}

        no_tta = (arrays["no_tta_oof"], arrays["no_tta_test"]) if "no_tta_oof" in arrays else None
        return cls(valid_idx=arrays["valid_idx"], members=pairs(meta["member_scores"]),
                   details=pairs(meta.get("detail_scores", {})), no_tta=no_tta, **meta)

    @staticmethod
    def is_complete(fold_dir: Path) -> bool:
        return (fold_dir / RESULT_FILE).is_file()


def _key(name: str) -> str:
    """A member's (or "member/network") name as an array name in predictions.npz."""
    return name.replace("/", "__")


class FoldArtifact:
    """A saved fold: its fitted preprocessing and its members (``FoldModel``, members.py), one
    subfolder each."""

    def __init__(self, directory: Path, bundle: dict):
        self.dir = Path(directory)
        self.preprocessor = bundle["preprocessor"]
        self.task = bundle["task"]
        self.classes = bundle["classes"]
        self.features = list(bundle["features"])
        self.member_names = list(bundle["members"])
        # Column → the values that mean missing there (features.columns), made missing in raw rows
        # as the run's tables were; folds saved before it was kept get them from their run (Run.artifact).
        self.missing_values: dict[str, list] = dict(bundle.get("missing_values", {}))
        self.weights: dict[str, float] | None = None  # the run's ensemble weights (Run.artifact sets them)
        self._members = None

    # ------------------------------------------------------------------ disk

    @staticmethod
    def save(fold_dir: Path, members: dict, bundle: dict, result: FoldResult) -> None:
        """``members``: name → fitted FoldModel."""
        tmp = fold_dir.with_name(fold_dir.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, member in members.items():
            member.save(tmp / name)
        dump_trusted(bundle, tmp / PREPROCESSING_FILE)
        np.savez(tmp / PREDICTIONS_FILE, **result.arrays())
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
        if not isinstance(bundle, dict) or not {"preprocessor", "task", "classes", "features"} <= set(bundle):
            raise DataError(f"{fold_dir / PREPROCESSING_FILE}: not a fold's preprocessing bundle. Train the run again.")
        if "members" not in bundle:
            raise DataError(f"{fold_dir}: a fold of an older version of the pipeline (one model file per seed, no "
                            f"member folders). Train the run again with this version.")
        return cls(fold_dir, bundle)

    def result(self) -> FoldResult:
        return FoldResult.load(self.dir)

    @property
    def valid_idx(self) -> np.ndarray:
        return np.load(self.dir / PREDICTIONS_FILE)["valid_idx"]

    def members(self) -> dict:
        """Member name → its FoldModel (loaded once)."""
        from .members import FoldModel

        if self._members is None:
            missing = [n for n in self.member_names if not (self.dir / n).is_dir()]
            if missing:
                raise DataError(f"{self.dir}: member folder(s) {missing} missing; the run folder is damaged. Train "
                                f"the run again.")
            self._members = {n: FoldModel.load(self.dir / n) for n in self.member_names}
        return self._members

    def keras_member(self):
        """The first Keras member (export converts it), or None."""
        return next((m for m in self.members().values() if m.kind == "keras"), None)

    @property
    def keras_paths(self) -> list[Path]:
        member = self.keras_member()
        return list(member.paths) if member is not None else []

    @property
    def target(self):
        """The first Keras member's target transform (None for classification)."""
        member = self.keras_member()
        return member.target if member is not None else None

    @property
    def clip(self):
        member = self.keras_member()
        return member.clip if member is not None else None

    @property
    def temperature(self) -> dict | None:
        """The temperature of the first Keras member's first network (``load_keras(0)``'s), when
        it was calibrated (train.calibration ts-mix); else None."""
        member = self.keras_member()
        if member is None or not member.paths:
            return None
        return member.temperatures.get(member.paths[0].stem.removeprefix("model_"))

    def load_keras(self, index: int = 0):
        """A fresh copy of the first Keras member's ``index``-th network (export compresses copies
        in place)."""
        from .members import load_network

        return load_network(self.keras_paths[index])

    # ------------------------------------------------------------------ prediction

    def transform(self, frame, source: str = "rows") -> dict[str, np.ndarray]:
        """Raw rows → the model's inputs through the fold's fitted preprocessing."""
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise DataError(f"{source}: lacks column(s) {missing[:5]} that the model was trained on. Add them "
                            f"(missing values are fine).")
        if self.missing_values:
            from ..data.load import mark_missing

            frame = frame.copy()
            mark_missing(frame, self.missing_values)
        return self.preprocessor.transform(frame)

    def predict_members(self, frame, image_paths=None, *, tta: bool = True, source: str = "rows",
                        only: set[str] | None = None) -> dict[str, np.ndarray]:
        """Each member's predictions for ``frame`` (internal form, target units); image folds need
        ``image_paths`` (one per row) and average the run's TTA views unless ``tta`` is False."""
        features = self.transform(frame, source)
        return {n: m.predict(features, image_paths, tta=tta) for n, m in self.members().items()
                if only is None or n in only}

    def predict(self, frame, image_paths=None, *, tta: bool = True, source: str = "rows",
                weights: dict[str, float] | None = None) -> np.ndarray:
        """The members' predictions combined with the run's ensemble weights (``weights``, else
        those the run set, else equal weights)."""
        from ..ensemble import weighted

        weights = weights or self.member_weights()
        used = {n for n, w in weights.items() if w > 0}
        preds = self.predict_members(frame, image_paths, tta=tta, source=source, only=used)
        return weighted([preds[n] for n in preds], [weights[n] for n in preds])

    def member_weights(self) -> dict[str, float]:
        """Member name → weight: those the run set, else equal weights."""
        return self.weights or {n: 1.0 / len(self.member_names) for n in self.member_names}


def load_fold_predictor(fold_dir: Path):
    """A function (raw DataFrame[, image file paths]) → predictions (no TTA), from a saved fold:
    its members weighed as the run weighs them (the run folder's ensemble.json, when the fold is
    still in its run folder; equal weights otherwise)."""
    from ..ensemble import Ensemble

    artifact = FoldArtifact.load(fold_dir)
    saved = Path(fold_dir).parent.parent / "ensemble.json"
    if saved.is_file():
        artifact.weights = Ensemble.weights_of(json.loads(saved.read_text()))

    def predict(df, image_paths=None):
        return artifact.predict(df, image_paths, tta=False)

    return predict
