"""A trained fold on disk: what it holds, how it is saved, loaded and asked for predictions.

A fold folder holds everything needed to predict again without the run:

- ``model_<member>.keras`` (or ``.joblib`` for a scikit-learn member): one per seed and checkpoint;
- ``preprocessing.joblib``: the fold's fitted TabularPreprocessor, target transform, task, classes,
  feature names and image settings;
- ``predictions.npz``: the validation rows' positions and the OOF/test predictions (per member too);
- ``result.json``: the fold's score, epochs and time.

It is written under a temporary name and renamed when complete, so a killed run never leaves a
fold that looks finished. Every reader (CV resume, export, distillation, run-level prediction)
goes through ``FoldArtifact``; nothing else opens these files.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np

from ..errors import DataError
from ..models.heads import to_prediction

PREPROCESSING_FILE = "preprocessing.joblib"
PREDICTIONS_FILE = "predictions.npz"
RESULT_FILE = "result.json"


def invert_target(pred: np.ndarray, target) -> np.ndarray:
    """Regression predictions back in the target's units (``target``: the fitted transform or None)."""
    return target.inverse_transform(pred.reshape(-1, 1)).ravel() if target is not None else pred


def to_output(raw: np.ndarray, task: str, target) -> np.ndarray:
    """A Keras model's raw output → the metrics' internal form, in the target's own units."""
    return invert_target(to_prediction(raw, task), target)


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
                joblib.dump(net, tmp / f"model_{member}.joblib")
                continue
            net.set_weights(weights)
            net.save(tmp / f"model_{member}.keras")
        joblib.dump(bundle, tmp / PREPROCESSING_FILE)
        arrays = {"valid_idx": result.valid_idx, "oof": result.oof, "test": result.test}
        if result.no_tta is not None:
            arrays["no_tta_oof"], arrays["no_tta_test"] = result.no_tta
        for member, (oof, test) in result.members.items():
            arrays[f"oof__{member}"], arrays[f"test__{member}"] = oof, test
        np.savez(tmp / PREDICTIONS_FILE, **arrays)
        (tmp / RESULT_FILE).write_text(json.dumps(result.summary(), indent=2))
        shutil.rmtree(fold_dir, ignore_errors=True)
        tmp.rename(fold_dir)  # the fold appears whole or not at all

    @classmethod
    def load(cls, fold_dir: Path) -> "FoldArtifact":
        fold_dir = Path(fold_dir)
        if not FoldResult.is_complete(fold_dir):
            raise DataError(f"{fold_dir}: not a finished fold (no {RESULT_FILE}).")
        return cls(fold_dir, joblib.load(fold_dir / PREPROCESSING_FILE))

    def result(self) -> FoldResult:
        return FoldResult.load(self.dir)

    @property
    def valid_idx(self) -> np.ndarray:
        return np.load(self.dir / PREDICTIONS_FILE)["valid_idx"]

    @property
    def keras_paths(self) -> list[Path]:
        return sorted(self.dir.glob("model_*.keras"))

    def models(self) -> list:
        """The members: Keras models, or scikit-learn estimators (loaded once)."""
        if self._models is None:
            import tf_keras as keras

            self._models = [keras.models.load_model(p) for p in self.keras_paths]
            self._models += [joblib.load(p) for p in sorted(self.dir.glob("model_*.joblib"))]
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
        target units). Image folds need ``image_paths`` (one per row) and average the run's TTA
        views unless ``tta`` is False."""
        from ..models.sklearn_models import predict as sklearn_predict
        from ..models.sklearn_models import to_matrix

        features = self.transform(frame, source)
        preds = []
        for model in self.models():
            if not hasattr(model, "predict_on_batch"):  # a scikit-learn estimator
                preds.append(invert_target(sklearn_predict(model, to_matrix(features)[0], self.task), self.target))
                continue
            views = [to_output(model.predict(x, verbose=0), self.task, self.target)
                     for x in self._datasets(features, image_paths, tta)]
            preds.append(np.mean(views, axis=0))
        return np.mean(preds, axis=0)

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
