"""One interface for a fold's model, whatever the model: ``FoldModel``.

A fold trains every member of the run (``model.members``) on the same fold inputs. Each member

- ``fit(fold)``: trains on the fold's training rows and returns its predictions for the fold's
  validation and test rows in target units (the metrics' internal form);
- ``predict(features, image_paths)``: predicts new rows, given the fold preprocessing's output;
- ``save(folder)`` / ``load(folder)``: its own subfolder of the fold folder, without pickle
  (Keras files in safe mode, skops with the trusted list, LightGBM's text model);
- ``describe()``: what the report and scores.json say of it.

A Keras member owns its target transform and link (standardizing, log1p, Poisson's log link), its
seeds and checkpoints (``train.seeds`` x ``train.checkpoints`` networks, averaged) and TTA. A
scikit-learn or LightGBM member owns its own target handling: HGB and LightGBM fit counts with a
Poisson loss (the Keras model's log link is not their scale), log1p targets for RMSLE, class
probabilities for classification. The run weighs the members' predictions afterwards (ensemble.py).
"""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, TrainingError, first_line
from ..metrics import get_metric
from ..models.sklearn_models import (HGB_MAX_CATEGORIES, MATRIX_MODELS, build_sklearn, frequent_codes, hgb_validation_rows,
                                     to_matrix)
from ..models.sklearn_models import predict as sklearn_predict
from .artifact import clip_target, dump_trusted, load_trusted, to_output
from .calibration import calibrate, fit_temperature

log = logging.getLogger("pipeline")
MEMBER_FILE = "member.skops"

# A scikit-learn member's settings unless its section (model.hgb, model.linear) says otherwise: the
# generalization README's HGB (learning rate 0.05, early stopping on a 10% inner split), with a cap
# of 500 rounds and 30 of patience so that a 19-class set stays in minutes.
SKLEARN_DEFAULTS = {"hgb": {"learning_rate": 0.05, "max_iter": 500, "early_stopping": True,
                            "validation_fraction": 0.1, "n_iter_no_change": 30},
                    "linear": {}}


def default_rows_per_call() -> int:
    from ..config import TrainConfig

    return TrainConfig.model_fields["predict_batch_size"].default


def member_names(cfg, images: bool) -> list[str]:
    """The run's members: ``model.members``, or by default the model, HGB and LightGBM for a
    tabular Keras model (model.name alone for images and tree or linear models). The two GBDTs
    err differently (HGB's capped categories and bins, LightGBM's own categorical splits): with
    both, the run met the better reference GBDT on 8 of the nine visible sets instead of 7 and
    fell on none (README, First score on new data)."""
    if cfg.model.members is not None:
        return list(cfg.model.members)
    if images or cfg.model.name in MATRIX_MODELS:
        return [cfg.model.name]
    return [cfg.model.name, "hgb", "lightgbm"]


def check_members(cfg, images: bool) -> list[str]:
    """The member names, each a known model; one ConfigError naming the fix if not."""
    from ..models import FAMILY_SECTIONS, MODELS

    names = member_names(cfg, images)
    for name in names:
        if name not in MATRIX_MODELS and name not in MODELS:
            raise ConfigError(f"model.members: unknown model {name!r}. Valid: {sorted(set(MODELS) | MATRIX_MODELS)}")
        if images and (name in MATRIX_MODELS or name in FAMILY_SECTIONS):
            raise ConfigError(f"model.members: {name} takes tabular inputs only; this competition has images. "
                              f"List image models only (e.g. [{cfg.model.name}]).")
        if name == "lightgbm":
            from ..models.lgbm import check_params

            check_params(dict(cfg.model.lightgbm), cfg.task or "regression")
        elif name in MATRIX_MODELS:
            params = sklearn_params(cfg.model, name)
            try:
                build_sklearn(name, cfg.task or "regression", params, [], {}, 0).get_params()
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"model.{name} {dict(getattr(cfg.model, name))} do not fit {name}: {exc}") from None
    fixed = set(cfg.ensemble.weights)
    if fixed and fixed != set(names):
        raise ConfigError(f"ensemble.weights names {sorted(fixed)}; the members are {names}. Give one weight per "
                          f"member.")
    return names


def inner_split_or_none(params: dict, y: np.ndarray, task: str) -> dict:
    """HGB's early stopping holds out ``validation_fraction`` of the rows, stratified for
    classification: on a fold too small for that (a class with one row, fewer held-out rows than
    classes) scikit-learn raises, so such a fold trains without early stopping."""
    fraction = params.get("validation_fraction", 0.1)
    if not params.get("early_stopping") or fraction is None:
        return params
    n_valid = int(np.ceil(fraction * len(y))) if fraction < 1 else int(fraction)
    if task == "regression":
        fits = n_valid >= 2 and len(y) - n_valid >= 2
    else:
        counts = np.unique(y, return_counts=True)[1]
        fits = counts.min() >= 2 and len(counts) <= n_valid <= len(y) - len(counts)
    return params if fits else {**params, "early_stopping": False}


def sklearn_params(model_cfg, name: str) -> dict:
    """A scikit-learn member's estimator arguments: the pipeline's defaults, then model.<name>."""
    return {**SKLEARN_DEFAULTS.get(name, {}), **getattr(model_cfg, name)}


@dataclass
class Fold:
    """What every member of a fold is fitted on."""

    data: object  # CompetitionData
    inputs: object  # FoldInputs: the preprocessed train / valid / test splits
    pre: object  # the fold's fitted TabularPreprocessor
    spec: object  # InputSpec for the Keras builders
    train_idx: np.ndarray
    valid_idx: np.ndarray
    seed: int
    label: str
    fold_dir: Path
    callbacks: list = field(default_factory=list)  # extra Keras callbacks (tuning's pruning)
    deadline: float | None = None  # time.monotonic() by which this member must be done

    @property
    def y_train(self) -> np.ndarray:
        return self.data.y[self.train_idx]

    @property
    def y_valid(self) -> np.ndarray:
        return self.data.y[self.valid_idx]


@dataclass
class MemberFit:
    """A fitted member's predictions (target units) and what its training did."""

    oof: np.ndarray
    test: np.ndarray
    details: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # seeds x checkpoints
    best_epoch: int = 0
    epochs: int = 0
    history: list[dict] = field(default_factory=list)
    no_tta: tuple[np.ndarray, np.ndarray] | None = None
    timers: list = field(default_factory=list)


def make_member(name: str, cfg, task: str, n_classes: int) -> "FoldModel":
    if name == "lightgbm":
        return LightGBMMember(name, task, dict(cfg.model.lightgbm), regression_target(cfg, task),
                              cfg.preprocessing.target_clip, n_classes)
    if name in MATRIX_MODELS:
        return SklearnMember(name, task, sklearn_params(cfg.model, name), regression_target(cfg, task),
                             cfg.preprocessing.target_clip)
    from .recipes import member_config

    return KerasMember(name, task, member_config(cfg, name, task))


def regression_target(cfg, task: str) -> str | None:
    """How a scikit-learn or LightGBM member fits a regression target: poisson, log1p, or None (as it is)."""
    if task != "regression":
        return None
    if cfg.train.loss == "poisson":
        return "poisson"
    return "log1p" if cfg.preprocessing.target_log1p is True else None


class FoldModel(ABC):
    """The interface of a fold's model (see the module's text)."""

    kind = ""  # "keras" | "sklearn": what FoldModel.load builds back

    @abstractmethod
    def fit(self, fold: Fold) -> MemberFit:
        """Train on the fold's training rows; predict its validation and test rows."""

    @abstractmethod
    def predict(self, features: dict[str, np.ndarray], image_paths=None, *, tta: bool = True) -> np.ndarray:
        """Predictions (target units) for rows already through the fold's preprocessing."""

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write the member into ``folder`` (no pickle)."""

    @abstractmethod
    def describe(self) -> dict:
        """What the member is, for scores.json and the report."""

    @staticmethod
    def load(folder: Path) -> "FoldModel":
        state = load_trusted(folder / MEMBER_FILE)
        if not isinstance(state, dict) or state.get("kind") not in ("keras", "sklearn", "lightgbm"):
            raise DataError(f"{folder / MEMBER_FILE}: not a fold member's description. Train the run again.")
        cls = {"keras": KerasMember, "sklearn": SklearnMember, "lightgbm": LightGBMMember}[state["kind"]]
        return cls.from_state(folder, state)


# ----------------------------------------------------------------------------- scikit-learn


class SklearnMember(FoldModel):
    """HistGradientBoosting or a linear model on the fold preprocessing's output."""

    kind = "sklearn"

    def __init__(self, name: str, task: str, params: dict, target: str | None, clip_target_range: bool):
        self.name, self.task, self.params, self.target = name, task, params, target
        self.clip_range = clip_target_range
        self.clip: tuple[float, float] | None = None
        self.model = None
        # HGB: matrix column → lookup of its category codes, for columns of more levels than
        # HGB takes (frequent_codes); fitted on the fold's training rows, applied to every row.
        self.lookups: dict[int, np.ndarray] = {}

    def fit(self, fold: Fold) -> MemberFit:
        y = fold.y_train
        params = inner_split_or_none(self.params, y, self.task)
        # HGB's early-stopping rows, where scikit-learn takes them as X_val: the matrix is built
        # with its fit rows first, and HGB gets two views of it instead of copying it to split.
        split = hgb_validation_rows(y, self.task, params, fold.seed) if self.name == "hgb" else None
        order = None if split is None else np.concatenate(split)
        x_train, cats = to_matrix(fold.inputs.x["train"], rows=order, dtype=self._dtype())
        names = sorted(k for k in fold.inputs.x["train"] if k != "numeric")
        sizes = {e[0]: e[1] for e in fold.pre.input_spec_.embeddings}
        vocab = {c: sizes[n] for c, n in zip(cats, names)}
        if self.name == "hgb":
            self.lookups = {c: frequent_codes(x_train[:, c], v) for c, v in vocab.items() if v > HGB_MAX_CATEGORIES}
            self._remap(x_train)
            vocab.update({c: HGB_MAX_CATEGORIES for c in self.lookups})
        if split is not None:  # early stopping decided above ("auto" on every training row)
            params = {**params, "early_stopping": True}
        self.model = build_sklearn(self.name, self.task, params, cats, vocab, fold.seed, poisson=self.poisson(y))
        target = self.fit_target(y)
        if split is None:
            self.model.fit(x_train, target)
        else:
            n_fit, target = len(split[0]), target[order]
            self.model.fit(x_train[:n_fit], target[:n_fit], X_val=x_train[n_fit:], y_val=target[n_fit:])
        del x_train  # one split's matrix at a time
        return MemberFit(*(self.predict(fold.inputs.x[k]) for k in ("valid", "test")), epochs=self.iterations())

    def _dtype(self):
        """HGB's matrix is float32: scikit-learn makes its own float64 copy of it either way (its
        categorical columns' encoder, or its input check), and float32 holds every input exactly
        (float32 values, int32 codes), so the trees are the same at half the memory. The linear
        models keep float64: Ridge and logistic regression would compute in float32."""
        return np.float32 if self.name == "hgb" else np.float64

    def fit_target(self, y: np.ndarray) -> np.ndarray:
        """The fold's training target as the estimator fits it (log1p for RMSLE); its range kept
        for clipping the predictions."""
        if self.clip_range:
            self.clip = float(np.min(y)), float(np.max(y))
        return np.log1p(y) if self.target == "log1p" else y

    def poisson(self, y: np.ndarray) -> bool:
        """A Poisson loss for a count target; not on a fold whose training counts are all 0, where
        HGB and LightGBM refuse it (a log link has no mean to fit): that fold fits the zeros as
        they are and predicts 0."""
        return self.target == "poisson" and bool(np.any(y > 0))

    def _finish(self, raw: np.ndarray) -> np.ndarray:
        pred = np.expm1(raw) if self.target == "log1p" else raw
        return clip_target(pred, self.clip)

    def iterations(self) -> int:
        n_iter = getattr(self.model, "n_iter_", None)  # None for Ridge's direct solvers
        return int(np.max(n_iter)) if n_iter is not None else 0

    def _remap(self, x: np.ndarray) -> np.ndarray:
        for c, lookup in self.lookups.items():
            x[:, c] = lookup[x[:, c].astype(np.int64)]
        return x

    def predict(self, features, image_paths=None, *, tta: bool = True) -> np.ndarray:
        return self._finish(sklearn_predict(self.model, self._remap(to_matrix(features, dtype=self._dtype())[0]), self.task))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._save_model(folder)
        dump_trusted({"kind": self.kind, "name": self.name, "task": self.task, "params": self.params,
                      "target": self.target, "clip": list(self.clip) if self.clip else None,
                      "lookups": {str(c): lookup.tolist() for c, lookup in self.lookups.items()},
                      **self._extra_state()}, folder / MEMBER_FILE)

    @classmethod
    def from_state(cls, folder: Path, state: dict) -> "SklearnMember":
        member = cls(state["name"], state["task"], state["params"], state["target"], state["clip"] is not None,
                     **cls._extra_arguments(state))
        member.clip = tuple(state["clip"]) if state["clip"] else None
        # Runs saved before the lookups existed fed such columns as plain codes: none to apply.
        member.lookups = {int(c): np.asarray(v, dtype=np.int64) for c, v in state.get("lookups", {}).items()}
        member.model = cls._load_model(folder)
        return member

    # What a subclass saves differently: its model file and its own constructor arguments.
    def _save_model(self, folder: Path) -> None:
        dump_trusted(self.model, folder / "model.skops")

    @staticmethod
    def _load_model(folder: Path):
        return load_trusted(folder / "model.skops")

    def _extra_state(self) -> dict:
        return {}

    @staticmethod
    def _extra_arguments(state: dict) -> dict:
        return {}

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "target": self.target or ("as it is" if self.task == "regression" else "class probabilities"),
                "iterations": self.iterations()}


class LightGBMMember(SklearnMember):
    """LightGBM on the same matrix as HGB, every category-code column a LightGBM categorical (it
    takes columns of thousands of levels as they are); its target handling is SklearnMember's."""

    kind = "lightgbm"

    def __init__(self, name: str, task: str, params: dict, target: str | None, clip_target_range: bool,
                 n_classes: int = 0):
        super().__init__(name, task, params, target, clip_target_range)
        self.n_classes = n_classes

    def fit(self, fold: Fold) -> MemberFit:
        from ..models.lgbm import fit_booster, fit_rows

        y = fold.y_train
        fit, watch = fit_rows(y, self.task, self.params, fold.seed)
        order = np.concatenate([fit, watch])  # the fit rows, then the watched: two views of one matrix
        x_train, cats = to_matrix(fold.inputs.x["train"], rows=order, dtype=np.float32)
        self.model = fit_booster(x_train, self.fit_target(y)[order], len(fit), cats, self.task, self.n_classes,
                                 self.params, fold.seed, poisson=self.poisson(y))
        del x_train
        return MemberFit(*(self.predict(fold.inputs.x[k]) for k in ("valid", "test")), epochs=self.iterations())

    def iterations(self) -> int:
        return int(self.model.current_iteration()) if self.model is not None else 0

    def predict(self, features, image_paths=None, *, tta: bool = True) -> np.ndarray:
        from ..models.lgbm import predict_booster

        return self._finish(predict_booster(self.model, to_matrix(features, dtype=np.float32)[0]))

    def _save_model(self, folder: Path) -> None:
        self.model.save_model(str(folder / "model.txt"))

    @staticmethod
    def _load_model(folder: Path):
        import lightgbm as lgb

        try:  # LightGBM's text model: parsed, never executed
            return lgb.Booster(model_file=str(folder / "model.txt"))
        except (lgb.basic.LightGBMError, OSError) as exc:
            raise DataError(f"{folder / 'model.txt'}: not a LightGBM model ({first_line(exc)}). Train the run "
                            f"again.") from None

    def _extra_state(self) -> dict:
        return {"n_classes": self.n_classes}

    @staticmethod
    def _extra_arguments(state: dict) -> dict:
        return {"n_classes": int(state.get("n_classes", 0))}


# ----------------------------------------------------------------------------- Keras


class KerasMember(FoldModel):
    """``train.seeds`` x ``train.checkpoints`` networks of one Keras model, averaged; TTA views
    averaged for images."""

    kind = "keras"

    def __init__(self, name: str, task: str, cfg=None):
        self.name, self.task, self.cfg = name, task, cfg
        self.target = None  # the fold's fitted target transform (regression)
        self.clip: tuple[float, float] | None = None
        self.image: dict | None = None  # the ImageConfig as a dict, for image competitions
        self.nets: dict[str, tuple] = {}  # "seed0_best" (or "best") → (network, its weights), loaded
        self._trained: dict[str, tuple] = {}  # after fit: "seed0_best" → (network, its weights)
        self.paths: list[Path] = []
        # train.calibration ts-mix: "seed0_best" → that network's temperature (calibration.py)
        self.temperatures: dict[str, dict] = {}
        self._forwards: dict[int, object] = {}  # id(network) → its traced forward pass (predict)
        # Rows per forward call, saved with the member: --predict chunks the rows as the fit did.
        self.rows_per_call = cfg.train.predict_batch_size if cfg is not None else default_rows_per_call()

    # ------------------------------------------------------------------ training

    def fit(self, fold: Fold) -> MemberFit:
        import tensorflow as tf

        from .fold import fit_target, target_range, transform_target
        from ..models.heads import encode_labels

        data, cfg, tc = fold.data, self.cfg, self.cfg.train
        task = self.task
        self.target = fit_target(cfg, task, fold.y_train)
        self.clip = target_range(cfg, task, fold.y_train)
        self.image = cfg.image.model_dump() if fold.inputs.images is not None else None
        y_fit = {k: encode_labels(transform_target(v, self.target), task, len(data.classes), tc)
                 for k, v in (("train", fold.y_train), ("valid", fold.y_valid))}
        out = MemberFit(None, None)
        identity = []
        try:
            for s in range(tc.seeds):
                self._fit_seed(fold, s, y_fit, out, identity)
        except tf.errors.InvalidArgumentError as exc:
            if fold.inputs.images is None:
                raise
            first = str(exc).strip().splitlines()[0][:200]
            raise DataError(f"{fold.label}: an image could not be decoded or resized ({first}). "
                            f"Check the files under image.train_dir / image.test_dir.") from None
        out.oof, out.test = (np.mean([p[i] for p in out.details.values()], axis=0) for i in (0, 1))
        if fold.inputs.images is not None:
            out.no_tta = tuple(np.mean([p[i] for p in identity], axis=0) for i in (0, 1))
        return out

    def _fit_seed(self, fold: Fold, s: int, y_fit: dict, out: MemberFit, identity: list) -> None:
        from .callbacks import History, StopAtDeadline, reestimate_batchnorm
        from .devices import precision_policy
        from .fold import train_model
        from .forward import can_forward, predict_rows
        from .recipes import lr_setting

        tc, inputs = self.cfg.train, fold.inputs
        metric = get_metric(self.cfg.metric, self.task)
        tag = fold.label if tc.seeds == 1 else f"{fold.label} seed {s}"
        datasets = {}  # (split, view) → its dataset, for Model.predict (images, several replicas): built once
        loss_of = validation_loss(self.task, tc, y_fit["valid"])

        def outputs(net, split: str, view: str = "identity") -> np.ndarray:  # raw outputs on a split's rows
            if inputs.images is None and can_forward(net):  # the traced forward pass (forward.py)
                return predict_rows(self._forward(net), inputs.x[split], self.rows_per_call)
            if (split, view) not in datasets:
                datasets[split, view] = inputs.dataset(split, view=view)
            return net.predict(datasets[split, view], verbose=0)

        def validate(net) -> tuple[float, float]:  # this epoch's weights on the validation rows
            with precision_policy(tc.precision):
                raw = outputs(net, "valid")
            # ts-mix: the epoch is judged as it would predict once its temperature is fitted.
            pred = self._output(raw, self._temperature(raw, fold.y_valid))
            # A diverged epoch has no score; NonFiniteLoss stops the fold with the error that says so.
            value = metric(fold.y_valid, pred, self.task) if np.isfinite(pred).all() else float("nan")
            return loss_of(net, raw), value

        history = History(validate if tc.history_metric else None, seed=s,
                          sign=1.0 if metric.direction == "minimize" else -1.0)
        tensorboard = fold.fold_dir.with_name(f"{fold.fold_dir.name}.tensorboard") / f"{self.name}-seed{s}" \
            if tc.tensorboard else None
        # Extra callbacks (tuning's per-epoch pruning) watch the first seed's model: one report per epoch.
        extra = [history] + (list(fold.callbacks) if s == 0 else [])
        if fold.deadline is not None:
            now = time.monotonic()
            out.timers.append(StopAtDeadline(now + (fold.deadline - now) / (tc.seeds - s), label=tag))
            extra.append(out.timers[-1])
        weights, net, info = train_model(fold.data, self.cfg, self.name, fold.spec, inputs, y_fit,
                                         fold.seed + 1000 * s, tag, extra, tensorboard)
        out.history += [{**row, "member": self.name} for row in history.rows]
        out.best_epoch = max(out.best_epoch, info["best_epoch"])
        out.epochs = max(out.epochs, info["epochs"])
        for ckpt, ckpt_weights in weights.items():  # train.checkpoints' (best: and its runners-up)
            sub = ckpt if tc.seeds == 1 else f"seed{s}_{ckpt}"
            with precision_policy(tc.precision):
                net.set_weights(ckpt_weights)
                if ckpt == "swa":
                    reestimate_batchnorm(net, inputs.dataset("train"))
                # The traced forward pass of the validation epochs (tabular rows), not Model.predict's
                # data handler and a dataset per call: those took 2.5-2.7 s of a health_insurance
                # fold's three networks (one thread), their checkpoints' whole prediction 0.4 s less
                # per network with the forward pass.
                raws = {v: [outputs(net, k, v) for k in ("valid", "test")] for v in inputs.views}
                plain_raw = raws.get("identity") or [outputs(net, k) for k in ("valid", "test")]
                # ts-mix: fitted on the identity view's validation logits, already predicted above
                temperature = self._temperature(plain_raw[0], fold.y_valid)
                if temperature is not None:
                    self.temperatures[sub] = temperature
                views = {v: tuple(self._output(r, temperature) for r in rs) for v, rs in raws.items()}
                plain = views.get("identity") or tuple(self._output(r, temperature) for r in plain_raw)
            # TTA: the mean of the views' probabilities (predictions for regression).
            oof, test = (np.mean([p[i] for p in views.values()], axis=0) for i in (0, 1))
            if not (np.isfinite(oof).all() and np.isfinite(test).all()):
                raise TrainingError(f"{tag}: the model predicts NaN/infinite values; no predictions were written. "
                                    f"Lower {lr_setting(self.name)} (now {tc.lr}) or add train.clip=global_norm.")
            out.details[sub] = (oof, test)
            identity.append(plain)
            self._trained[sub] = (net, net.get_weights())  # after SWA's BatchNorm re-estimation

    def _output(self, raw: np.ndarray, temperature: dict | None = None) -> np.ndarray:
        if temperature is not None:
            return calibrate(raw, self.task, temperature)
        return to_output(raw, self.task, self.target, self.clip)

    @property
    def calibrates(self) -> bool:
        """train.calibration ts-mix on a classification task."""
        return self.task != "regression" and self.cfg.train.calibration != "none"

    def _temperature(self, raw: np.ndarray, y: np.ndarray) -> dict | None:
        """The temperature fitted on these validation logits when the member calibrates; else None."""
        return fit_temperature(raw, y, self.task) if self.calibrates else None

    # ------------------------------------------------------------------ prediction

    def networks(self):
        """Each network with its weights, one at a time: after fit, several checkpoints share one
        network whose weights are set as it is reached (use each before taking the next)."""
        return (net for _, net in self.named_networks())

    def named_networks(self):
        """(name, network) pairs, as ``networks`` gives them; the name keys its temperature."""
        if self._trained:
            for sub in self._trained:
                yield sub, self._with_weights(sub)
            return
        if not self.nets:
            self.nets = self._load_networks()
        for sub, (net, weights) in self.nets.items():
            net.set_weights(weights)  # networks of one architecture share a model (_load_networks)
            yield sub, net

    def _load_networks(self) -> dict[str, tuple]:
        """Each saved network with its weights. Networks of one architecture (a model's best
        epochs) share one Keras model: rebuilding a model from its file takes about 0.3 s, reading
        a file's weights into a built one a few milliseconds (25 networks of a 5-fold realmlp run)."""
        loaded, built = {}, {}
        for path in self.paths:
            architecture = saved_architecture(path)
            net = built.get(architecture)
            if net is None:
                net = built[architecture] = load_network(path)
            else:
                load_weights(net, path)
            loaded[path.stem.removeprefix("model_")] = (net, net.get_weights())
        return loaded

    def predict(self, features, image_paths=None, *, tta: bool = True) -> np.ndarray:
        from .forward import can_forward, predict_rows

        preds = []
        for sub, net in self.named_networks():
            temperature = self.temperatures.get(sub)
            if self.image is None and can_forward(net):
                # The traced forward pass the fit predicted the test rows with (forward.py), in the
                # same chunks: a saved run's --predict gives the run's own test predictions to the
                # bit, without Model.predict's data handler on every call (permutation importance
                # calls this once per batch of shuffled copies).
                raws = [predict_rows(self._forward(net), features, self.rows_per_call)]
            else:
                raws = [net.predict(x, verbose=0) for x in self._datasets(features, image_paths, tta)]
            preds.append(np.mean([self._output(raw, temperature) for raw in raws], axis=0))
        return np.mean(preds, axis=0)

    def _forward(self, net):
        """``net``'s traced forward pass, traced once per network object (checkpoints of one
        architecture share one and set their weights into it)."""
        from .forward import forward_function

        if id(net) not in self._forwards:
            self._forwards[id(net)] = forward_function(net)
        return self._forwards[id(net)]

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

    # ------------------------------------------------------------------ disk

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for sub in self._trained:
            self._with_weights(sub).save(folder / f"model_{sub}.keras")
        dump_trusted({"kind": self.kind, "name": self.name, "task": self.task, "target": self.target,
                      "clip": list(self.clip) if self.clip else None, "image": self.image,
                      "networks": list(self._trained), "temperatures": self.temperatures,
                      "rows_per_call": self.rows_per_call}, folder / MEMBER_FILE)

    def _with_weights(self, sub: str):
        net, weights = self._trained[sub]  # several checkpoints share one network: set theirs
        net.set_weights(weights)
        return net

    @classmethod
    def from_state(cls, folder: Path, state: dict) -> "KerasMember":
        member = cls(state["name"], state["task"])
        member.target, member.image = state["target"], state["image"]
        member.clip = tuple(state["clip"]) if state["clip"] else None
        member.paths = [folder / f"model_{sub}.keras" for sub in state["networks"]]
        member.temperatures = state.get("temperatures", {})  # none in runs from before train.calibration
        member.rows_per_call = state.get("rows_per_call", member.rows_per_call)  # runs before it: the default
        if not (isinstance(member.rows_per_call, int) and member.rows_per_call > 0):
            raise DataError(f"{folder / MEMBER_FILE}: its rows_per_call is {member.rows_per_call!r}, not a positive "
                            f"whole number; the run folder is damaged. Train the run again.")
        if not _valid_temperatures(member.temperatures, state["networks"]):
            raise DataError(f"{folder / MEMBER_FILE}: its temperatures are not one pair of non-negative numbers per "
                            f"network; the run folder is damaged. Train the run again.")
        missing = [p.name for p in member.paths if not p.is_file()]
        if missing:
            raise DataError(f"{folder}: {', '.join(missing)} missing; the run folder is damaged. Train the run again.")
        return member

    def describe(self) -> dict:
        out = {"name": self.name, "kind": self.kind,
               "networks": [p.name for p in self.paths] or [f"model_{s}.keras" for s in self._trained]}
        if self.temperatures:  # train.calibration ts-mix
            out["inverse_temperatures"] = {s: round(t["inverse_temperature"], 4) for s, t in self.temperatures.items()}
        return out


def _valid_temperatures(temperatures, networks) -> bool:
    def number(v) -> bool:
        return isinstance(v, float) and np.isfinite(v) and v >= 0

    return isinstance(temperatures, dict) and set(temperatures) <= set(networks) and all(
        isinstance(t, dict) and number(t.get("inverse_temperature")) and number(t.get("mix"))
        for t in temperatures.values())


def validation_loss(task: str, tc, y_valid: np.ndarray):
    """(net, raw predictions) → the loss Keras' validation pass would report: the compiled loss's
    mean over the rows plus the network's regularization losses."""
    import tensorflow as tf
    import tf_keras as keras

    from ..models.heads import make_loss

    loss = make_loss(task, tc)
    # Per-row values, averaged here: under a tf.distribute strategy a loss may not reduce itself
    # outside compile(). The mean is what Keras' sum-over-batch-size reduction gives.
    loss.reduction = keras.losses.Reduction.NONE
    y_true = tf.constant(y_valid)  # tensors: the loss aligns (rows,) with (rows, 1) only for them

    def loss_of(net, raw: np.ndarray) -> float:
        value = float(tf.reduce_mean(loss(y_true, tf.constant(raw))))
        return value + sum(float(r) for r in net.losses)

    return loss_of


def load_network(path: Path):
    import tf_keras as keras

    from ..models import register_keras_objects

    register_keras_objects()
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except (ValueError, OSError) as exc:  # a Lambda layer's code, a damaged zip
        first = first_line(exc)
        raise DataError(f"{path}: the Keras model could not be loaded safely ({first}). Train the run "
                        f"again.") from None


def saved_architecture(path: Path) -> str:
    """A .keras file's architecture (its config.json), or its path where it cannot be read (then
    load_network says why)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read("config.json").decode()
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError):
        return str(path)


def load_weights(net, path: Path) -> None:
    """The weights of the .keras file ``path`` into ``net``, a model of the same architecture
    (Keras reads only the weights file inside it: no code, as load_network's safe mode)."""
    try:
        net.load_weights(path)
    except (ValueError, OSError, KeyError) as exc:
        first = first_line(exc)
        raise DataError(f"{path}: the Keras model's weights could not be read ({first}). Train the run "
                        f"again.") from None


def deadlines(names: list[str], deadline: float | None):
    """Each Keras member's share of the time left (the members on one matrix, scikit-learn's and
    LightGBM, are fitted first, so their time is already spent when the shares are taken)."""
    keras_left = sum(n not in MATRIX_MODELS for n in names)
    for name in names:
        if deadline is None or name in MATRIX_MODELS:
            yield None
            continue
        now = time.monotonic()
        yield now + (deadline - now) / keras_left
        keras_left -= 1


def fit_order(names: list[str]) -> list[str]:
    """The members on one matrix (scikit-learn's, LightGBM) first, so that a time limit's deadline
    for the Keras epochs already counts their time."""
    return sorted(names, key=lambda n: n not in MATRIX_MODELS)


__all__ = ["Fold", "FoldModel", "KerasMember", "LightGBMMember", "MemberFit", "SklearnMember", "check_members",
           "deadlines", "fit_order", "make_member", "member_names"]
