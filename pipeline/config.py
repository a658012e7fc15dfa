"""The config schema and its validation.

Every section has defaults, so a config names only what differs; a run writes the fully resolved
config (inferred task, metric, CV scheme and column types filled in). ``validate`` turns a dict
into a Config or raises one ConfigError line naming the source, the dotted field, the allowed
values and what was given.

This module knows the shape of a config only. Reading files, overlays and ``--set`` live in
config_files.py, and names that refer to registries (metrics, models, scalers, encoders) are
checked there against the registries themselves, so this module imports none of them.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator,
                      model_validator)

from .errors import ConfigError

Task = Literal["regression", "binary", "multiclass"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the files are (Kaggle layout) and which columns are the id and the target."""

    dir: str = "data"  # relative to the config file's folder; --data-dir overrides it
    train: str = "train.csv"
    test: str = "test.csv"
    sample_submission: str = "sample_submission.csv"
    solution: Optional[str] = "solution.csv"  # held-out labels; used only if the file exists
    id: str = "id"
    target: str
    positive_label: Any = None  # binary only; inferred (1, True, "yes", ... or the last sorted)
    # How submission.csv carries predictions: probabilities or labels. "auto" follows the metric.
    submission: Literal["auto", "proba", "label"] = "auto"
    # Classification: the declared classes (in this order); a training label outside them is an error.
    classes: Optional[list[Any]] = None


class CVConfig(_Section):
    # "auto": stratified for classification, kfold for regression.
    scheme: Literal["auto", "kfold", "stratified", "group", "stratified_group"] = "auto"
    folds: int = Field(5, ge=2)
    repeats: int = Field(1, ge=1)
    seed: int = 42
    group: Optional[str] = None  # column for group / stratified_group
    # Regression targets are binned into this many quantiles for stratified schemes.
    stratify_bins: int = Field(10, ge=2)


class ColumnConfig(_Section):
    """Per-column overrides of what is inferred or set for the whole table."""

    type: Optional[Literal["numeric", "categorical"]] = None
    scaler: Optional[str] = None  # a numeric preprocessor name
    encoder: Optional[str] = None  # a categorical encoder name
    order: Optional[list[Any]] = None  # category order for ordinal encoding
    missing_values: list[Any] = []  # values that mean "missing" (e.g. 0 for a size)
    embedding_dim: Optional[int] = Field(None, ge=1)


class FeaturesConfig(_Section):
    include: Optional[list[str]] = None  # default: every column but the id, target and group
    drop: list[str] = []
    columns: dict[str, ColumnConfig] = {}
    # A text column whose values are numbers but for at most this share of non-numeric tokens
    # ("?", "n/a") is read as numeric, the tokens as missing (with a warning naming them).
    numeric_tokens: float = Field(0.01, ge=0, lt=1)


class PreprocessingConfig(_Section):
    numeric: str = "auto"
    skew_threshold: float = Field(1.0, gt=0)  # |skewness| above which "auto" uses RankGauss
    ple_knots: int = Field(8, ge=3)  # "ple": quantile knots of the piecewise-linear encoding
    impute: Literal["median", "constant"] = "median"
    fill_value: float = 0.0
    # A 0/1 column per numeric column that has missing values in the fold (imputation hides them;
    # missing-not-at-random values carry signal: bench/generalization.py, portal_species).
    missing_indicator: bool = True
    categorical: str = "auto"
    onehot_max_levels: int = Field(10, ge=1)  # "auto": one-hot up to this many levels, else embedding
    # "auto": a target encoding (cross-fitted in the fold) instead of an embedding above this many levels.
    target_levels: Optional[int] = Field(None, ge=1)
    # "auto": a target encoding instead of an embedding where the column's levels have a median of
    # fewer than this many rows in the fold (an embedding row learned from 2 or 3 rows memorizes them).
    target_median_rows: Optional[float] = Field(4, gt=0)
    # Categories seen fewer times in a fold share the rare index; "auto": per column and fold, the
    # square root of its mean rows per level, within 2-20 (categorical.auto_min_count).
    min_count: Union[Annotated[int, Field(ge=1)], Literal["auto"]] = "auto"
    embedding_dim: Optional[int] = Field(None, ge=1)  # None: fastai's min(600, round(1.6 n^0.56))
    # Regression: train on log1p(target). auto: when the metric is scored on that scale (rmsle).
    target_log1p: Union[bool, Literal["auto"]] = "auto"
    target_standardize: bool = True  # regression only
    # Regression: predictions clipped to the range of the fold's training targets (a count stays
    # non-negative, a 1-10 rating stays within 1-10).
    target_clip: bool = True



TTA_VIEWS = ("identity", "hflip", "vflip", "shift_left", "shift_right", "shift_up", "shift_down",
             "zoom_in", "zoom_out", "rotate_left", "rotate_right")


class AugmentConfig(_Section):
    """Random per-image augmentation of training batches (after the cache). By default small
    shifts, rotations and zooms, which keep what most images show (a digit stays that digit), and
    no flips (a flipped digit or letter is another one, or none): bench/images.py --part defaults."""

    hflip: bool = False  # off for digits and text
    vflip: bool = False
    rotation: float = Field(10.0, ge=0, le=180)  # degrees, uniform in ±rotation
    shift: float = Field(0.1, ge=0, lt=1)  # fraction of the size, uniform in ±shift per axis
    zoom: float = Field(0.1, ge=0, lt=1)  # scale uniform in [1 - zoom, 1 + zoom]
    shear: float = Field(0.0, ge=0, lt=1)
    brightness: float = Field(0.0, ge=0, le=1)  # ± fraction of the 0-255 range
    contrast: float = Field(0.0, ge=0, lt=1)  # factor uniform in [1 - contrast, 1 + contrast]
    randaugment_n: int = Field(0, ge=0, le=6)  # RandAugment: ops drawn per image; 0: off
    randaugment_m: float = Field(5.0, ge=0, le=10)  # RandAugment magnitude (0-10)
    fill: Literal["constant", "reflect", "nearest", "wrap"] = "constant"  # pixels moved in from outside


class TTAConfig(_Section):
    """Test-time augmentation: deterministic views whose predicted probabilities are averaged."""

    views: list[Literal[TTA_VIEWS]] = ["identity"]
    shift: float = Field(0.1, gt=0, lt=1)  # fraction of the size, for shift_*
    zoom: float = Field(0.1, gt=0, lt=1)  # for zoom_in / zoom_out
    rotation: float = Field(10.0, gt=0, le=180)  # degrees, for rotate_*

    @field_validator("views")
    @classmethod
    def _views(cls, v):
        if not v or len(set(v)) != len(v):
            raise ValueError(f"list at least one view, each once, from {list(TTA_VIEWS)}")
        return v


class PretrainConfig(_Section):
    """image.pretrain: self-supervised pretraining of the image model's encoder (cnn, vit) on the
    competition's own train and test images, without labels (training/pretrain.py); every fold then
    fine-tunes it. ``image.pretrain: simclr`` is short for ``{method: simclr}``."""

    method: Optional[Literal["simclr"]] = None  # SimCLR (Chen et al. 2020): two views, NT-Xent loss
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=4)  # images per batch (2x views): the negatives each view sees
    lr: float = Field(1e-3, gt=0)  # AdamW, cosine decay
    weight_decay: float = Field(1e-4, ge=0)
    temperature: float = Field(0.2, gt=0)
    projection: int = Field(64, ge=2)  # the projection head's output (dropped after pretraining)
    # Each view: a random shift, rotation, zoom and contrast (no flip unless image.augment flips).
    rotation: float = Field(15.0, ge=0, le=180)
    shift: float = Field(0.15, ge=0, lt=1)
    zoom: float = Field(0.2, ge=0, lt=1)
    contrast: float = Field(0.4, ge=0, lt=1)
    head_epochs: int = Field(2, ge=0)  # fine-tuning: the head alone first, then the whole network
    # The encoder's weights file (encoder.weights.h5 of an earlier pretraining with the same model
    # settings); None: the run pretrains (or reuses what it pretrained before).
    weights: Optional[str] = None


class ImageConfig(_Section):
    """An image column: the competition is an image (or image + tabular) competition."""

    column: Optional[str] = None  # column of train/test CSVs holding each image's file name or id
    train_dir: str = "train"  # folders (relative to data.dir) holding the training / test images
    test_dir: str = "test"
    extension: str = ""  # appended to the column's values (e.g. ".png" when it holds bare ids)
    # height, width the images are resized to; None: the training images' own (most common) size,
    # scaled down to at most 224 on the longer side.
    size: Optional[list[int]] = None
    # 1: grayscale; 3: RGB (grayscale files are repeated to 3); None: 1 when the images are grayscale.
    channels: Optional[Literal[1, 3]] = None
    resize: Literal["resize", "pad"] = "resize"  # plain resize, or keep the aspect ratio and pad
    # Decoded images are cached: in memory, or in a file when the decoded set is larger than
    # cache_memory_mb ("auto"); "none" decodes every epoch.
    cache: Literal["auto", "memory", "file", "none"] = "auto"
    cache_memory_mb: float = Field(2048, gt=0)
    augment: AugmentConfig = AugmentConfig()
    tta: TTAConfig = TTAConfig()
    pretrain: PretrainConfig = PretrainConfig()

    @field_validator("pretrain", mode="before")
    @classmethod
    def _method_alone(cls, v):
        return {"method": v} if v is None or isinstance(v, str) else v

    @field_validator("size")
    @classmethod
    def _size(cls, v):
        if v is not None and (len(v) != 2 or any(s < 8 for s in v)):
            raise ValueError("give [height, width], each at least 8")
        return v


class RealMLPConfig(_Section):
    """model.name realmlp: RealMLP-TD (Holzmueller et al. 2024, pytabkit's defaults) and its own
    training recipe; train.* still sets the run-wide parts (seeds, checkpoints, precision)."""

    hidden: list[int] = [256, 256, 256]
    embedding_dim: int = Field(8, ge=1)  # per categorical above preprocessing.onehot_max_levels
    plr_hidden: int = Field(16, ge=1)  # PBLD: cos(2 pi w x + b) features per numeric column
    plr_dim: int = Field(4, ge=2)  # PBLD: per numeric column, plr_dim - 1 linear outputs and the value
    plr_sigma: float = Field(0.1, gt=0)
    activation: Literal["auto", "selu", "mish", "relu"] = "auto"  # auto: selu classification, mish regression
    dropout: float = Field(0.15, ge=0.0, lt=1.0)  # on a flat-cosine schedule
    lr: Optional[float] = Field(None, gt=0)  # None: 0.04 classification, 0.2 regression
    weight_decay: float = Field(0.02, ge=0)  # decoupled, on a flat-cosine schedule; not on biases
    beta_2: float = Field(0.95, gt=0, lt=1)
    # The authors train 256 epochs; 32 here (the coslog4 schedule is stretched over the epochs
    # given) for the time goal; see the README's generalization table for what it measured.
    epochs: int = Field(32, ge=1)
    batch_size: int = Field(256, ge=1)
    # The authors' early stopping (pytabkit's use_early_stopping, off in their defaults): stop once
    # the next epoch would pass early_stopping_factor x the best epoch + early_stopping (their
    # factor 2 for coslog4; their 20 of 256 epochs is about 3 of 32). None (the default): every
    # epoch; the best is kept either way. Measured with 3 on the nine sets: faster where the best
    # epoch comes early, but a fold whose second cycle did not beat its first stopped at epoch 7
    # where its best was 12 (chem97) or 32 (diamonds); README, First score on new data.
    early_stopping: Optional[int] = Field(None, ge=0)
    early_stopping_factor: float = Field(2.0, ge=1)
    # Not the authors' (they predict with the best epoch): the mean of the predictions of the 5 best
    # epochs, which under coslog4 come from the ends of different cycles. Measured on the nine sets:
    # README, First score on new data.
    best_epochs: int = Field(5, ge=1)
    # auto: 0.1 for metrics on hard labels (accuracy, f1), 0 for AUC, log loss (the authors' advice).
    label_smoothing: Union[float, Literal["auto"]] = "auto"
    # auto: ts-mix (train.calibration) when the metric is log loss, as the authors advise for it;
    # none otherwise (AUC and accuracy do not change with a temperature).
    calibration: Literal["auto", "none", "ts-mix"] = "auto"
    # lr multipliers (the authors' parameter groups): front scale, biases, parametric activations, PBLD.
    scale_lr_factor: float = Field(6.0, gt=0)
    bias_lr_factor: float = Field(0.1, gt=0)
    act_lr_factor: float = Field(0.1, gt=0)
    plr_lr_factor: float = Field(0.1, gt=0)

    @field_validator("label_smoothing")
    @classmethod
    def _smoothing(cls, v):
        if v != "auto" and not 0 <= v < 1:
            raise ValueError(f"give a value in [0, 1) or auto, got {v}")
        return v


class TabMConfig(_Section):
    """model.name tabm: TabM (Gorishniy et al. 2025) as its authors train it: k members sharing
    the MLP's weights, and its own training recipe (AdamW, early stopping)."""

    variant: Literal["mini", "full"] = "mini"  # mini: one input adapter per member; full: BatchEnsemble
    k: int = Field(32, ge=1)
    hidden: list[int] = [512, 512]
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # ple: piecewise-linear embeddings of the numeric columns (version B); none: the values as they are.
    numeric_embedding: Literal["ple", "none"] = "ple"
    bins: int = Field(48, ge=2)  # PLE: quantile bins per numeric column (fewer for few distinct values)
    embedding_dim: int = Field(16, ge=1)  # PLE's width per numeric column
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(3e-4, ge=0)
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(256, ge=1)
    early_stopping: int = Field(16, ge=1)  # patience in epochs


def _positive(widths: list[int]) -> list[int]:
    if any(w < 1 for w in widths):
        raise ValueError(f"every width must be >= 1, got {widths}")
    return widths


class DenseConfig(_Section):
    """Dense blocks (Dense, normalization, activation, dropout): the MLP's layers, and the head of
    the image models."""

    hidden: list[int] = [256, 128]
    activation: str = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    norm: Literal["none", "batch", "layer", "group"] = "none"
    groups: int = Field(8, ge=1)  # group norm: groups per layer (the gcd with the layer's width is used)
    initializer: Literal["he_normal", "he_uniform", "glorot_normal", "glorot_uniform"] = "he_normal"
    # Gradient checkpointing: recompute each hidden block's activations in the backward pass.
    checkpoint: bool = False

    @field_validator("hidden")
    @classmethod
    def _widths(cls, v: list[int]) -> list[int]:
        return _positive(v)

    @model_validator(mode="after")
    def _checkpoint_norm(self):
        if self.checkpoint and self.norm == "batch":
            # Recomputing a block would update BatchNorm's moving statistics twice per step.
            raise ValueError("checkpoint cannot be combined with norm=batch; use layer or group")
        return self


class MLPConfig(DenseConfig):
    """model.name mlp: an MLP over the preprocessed inputs and entity embeddings."""

    embedding_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # dropout on each entity embedding's output
    # periodic (PLR) embeddings of the scaled numeric columns beside them; none: off.
    numeric_embedding: Literal["none", "plr"] = "none"
    plr_frequencies: int = Field(16, ge=1)
    plr_dim: int = Field(16, ge=1)
    plr_sigma: float = Field(0.1, gt=0)  # initial frequencies ~ N(0, sigma^2) on standardized values


class ImageHeadConfig(DenseConfig):
    """What every image model adds after its image features: dropout on them, the dense head
    (``hidden``), and for image + tabular competitions the tabular branch's widths."""

    tabular_hidden: list[int] = [64]

    @field_validator("tabular_hidden")
    @classmethod
    def _tabular_widths(cls, v: list[int]) -> list[int]:
        return _positive(v)


class CNNConfig(ImageHeadConfig):
    """model.name cnn: conv blocks of these widths (each convs_per_block conv-BN-activation, then
    pooling), global average pooling, the head."""

    # None: sized to the image (cnn.py: auto_filters): a block per halving while the feature map
    # stays at least 2 pixels wide, up to 5, widths 32, 64, ... up to 256 (8x8: 3 blocks, 28x28: 4).
    filters: Optional[list[int]] = None
    convs_per_block: int = Field(1, ge=1)
    hidden: list[int] = [128]
    dropout: float = Field(0.3, ge=0.0, lt=1.0)

    @field_validator("filters")
    @classmethod
    def _filter_widths(cls, v):
        return v if v is None else _positive(v)


class ViTConfig(ImageHeadConfig):
    """model.name vit: a small Vision Transformer (Dosovitskiy et al. 2021) with a convolutional
    stem (Xiao et al. 2021, "Early convolutions help transformers see better"): stem convolutions,
    non-overlapping patches of the stem's output, learned position embeddings, pre-norm encoder
    blocks, the tokens' mean, the head."""

    stem: list[int] = [32]  # 3x3 conv-BN-activation widths before the patches (stride 1)
    # Patch side in pixels; None: the image's shorter side / 7 rounded up (a 7x7 grid of tokens on
    # 28x28 and 14x14 digits, 4x4 tokens of 2x2 pixels on 8x8 images: small images are not upscaled).
    patch: Optional[int] = Field(None, ge=1)
    dim: int = Field(64, ge=8)  # token width
    depth: int = Field(4, ge=1)  # encoder blocks
    heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(2.0, gt=0)  # each block's MLP width / dim
    attention_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    hidden: list[int] = []  # the head's dense layers after the tokens' mean (none: linear head)

    @field_validator("stem")
    @classmethod
    def _stem_widths(cls, v: list[int]) -> list[int]:
        return _positive(v) if v else v

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        return self


class BackboneConfig(ImageHeadConfig):
    """model.name efficientnetb0, mobilenetv2, ...: a tf_keras.applications network, the head."""

    weights: Optional[str] = None  # weights file (.h5, include_top=False); None: random
    head_epochs: int = Field(0, ge=0)  # first train the head alone for this many epochs
    unfreeze: Optional[int] = Field(None, ge=0)  # then unfreeze the top N backbone layers; None: all
    backbone_lr_mult: float = Field(0.1, gt=0, le=1)  # the backbone's learning rate / the head's


# The flat model.* keys of earlier versions: each now lives in its model family's section.
FAMILY_KEYS = {**{k: ("mlp", "cnn", "backbone") for k in DenseConfig.model_fields},
               **{k: ("mlp",) for k in set(MLPConfig.model_fields) - set(DenseConfig.model_fields)},
               "tabular_hidden": ("cnn", "backbone"), "filters": ("cnn",), "convs_per_block": ("cnn",),
               **{k: ("backbone",) for k in ("weights", "head_epochs", "unfreeze", "backbone_lr_mult")}}


def sectioned_model(model: dict) -> dict:
    """A model section saved before the family sections (a run folder's config.yaml), with its
    flat keys moved where they now live. In that schema a flat key applied to every family that
    had it, so it goes to each of their sections; ``params`` was model.name's scikit-learn
    model's and ``member_params`` each member's. A user's config gets an error naming the key
    instead (``ModelConfig._renamed``): only a run's own record is rewritten, in memory."""
    model = dict(model)
    for key in [k for k in model if k in FAMILY_KEYS]:
        value = model.pop(key)
        for family in FAMILY_KEYS[key]:
            model.setdefault(family, {}).setdefault(key, value)
    params, per_member = model.pop("params", None) or {}, model.pop("member_params", None) or {}
    for name in ("hgb", "linear"):
        own = {**(params if model.get("name") == name else {}), **per_member.get(name, {})}
        if own:
            model[name] = {**own, **model.get(name, {})}
    return model


class ModelConfig(_Section):
    """The run's model and members; each model family's settings are its own section, and its
    builder receives that section alone (models/__init__.py: ``model_section``)."""

    # realmlp: the Keras model that won most often across the nine visible sets (README, First score
    # on new data); mlp, tabm, hgb, lightgbm, linear, cnn or a backbone otherwise.
    name: str = "realmlp"
    # The run's members: models trained on every fold's same inputs, then weighed by the ensemble
    # (the ensemble section). None: model.name, hgb and lightgbm for a tabular Keras model (wins more
    # often than fewer: bench/generalization.py, README), model.name alone otherwise.
    members: Optional[list[str]] = None
    mlp: MLPConfig = MLPConfig()
    realmlp: RealMLPConfig = RealMLPConfig()
    tabm: TabMConfig = TabMConfig()
    cnn: CNNConfig = CNNConfig()
    vit: ViTConfig = ViTConfig()
    backbone: BackboneConfig = BackboneConfig()  # every tf_keras.applications backbone
    # scikit-learn members: their estimator's keyword arguments, over the pipeline's defaults.
    hgb: dict[str, Any] = {}
    linear: dict[str, Any] = {}
    # LightGBM's parameters (its own names: num_leaves, min_data_in_leaf, ...), over models/lgbm.py's.
    lightgbm: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, raw):
        if isinstance(raw, dict):
            if {"blend", "blend_weight", "blend_params"} & set(raw):
                raise ValueError("model.blend, model.blend_weight and model.blend_params were replaced: list the "
                                 "models in model.members (e.g. [mlp, hgb]); their weights are fitted on OOF "
                                 "predictions (ensemble.method), or fixed with ensemble.weights")
            if isinstance(raw.get("members"), int):
                raise ValueError(f"model.members is now the run's list of models (e.g. [tabm, hgb]); TabM's "
                                 f"member count is model.tabm.k (set model.tabm.k={raw['members']})")
            if "k" in raw:
                raise ValueError(f"model.k moved to model.tabm.k (set model.tabm.k={raw['k']})")
            moved = [k for k in raw if k in FAMILY_KEYS]
            if moved:
                key = moved[0]
                where = " or ".join(f"model.{f}.{key}" for f in FAMILY_KEYS[key])
                raise ValueError(f"model.{key} moved into its model family's section: set {where} (each model "
                                 f"reads its own section)")
            if "params" in raw or "member_params" in raw:
                raise ValueError("model.params and model.member_params moved into each scikit-learn model's own "
                                 "section: set model.hgb.<argument> or model.linear.<argument>")
        return raw

    @field_validator("members")
    @classmethod
    def _distinct_members(cls, v):
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError(f"name each model once, at least one: got {v}")
        return v


class TrainConfig(_Section):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(256, ge=1)
    # realmlp: Adam with the network's per-parameter learning-rate factors and decoupled weight
    # decay on a flat-cosine schedule (RealMLP's; optimizers.FactorAdam).
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop", "lion", "lamb", "realmlp"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)  # adamw, lamb, realmlp
    beta_2: float = Field(0.999, gt=0, lt=1)  # adam, adamw, realmlp: the second-moment decay
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd, rmsprop
    nesterov: bool = True  # sgd
    # Linear LR scaling: lr * batch_size / base_batch_size.
    scale_lr: bool = False
    base_batch_size: int = Field(256, ge=1)
    # constant (+ ReduceLROnPlateau), cosine, sgdr (warm restarts), onecycle, step, coslog4 (RealMLP's);
    # see schedules.py.
    schedule: Literal["constant", "cosine", "sgdr", "onecycle", "step", "coslog4"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0)
    sgdr_period: float = Field(10.0, gt=0)  # epochs of the first cycle
    sgdr_mult: float = Field(2.0, ge=1)  # each next cycle this many times longer
    step_every: float = Field(30.0, gt=0)  # epochs between steps
    step_factor: float = Field(0.1, gt=0, lt=1)
    clip: Optional[Literal["value", "norm", "global_norm"]] = None
    clip_value: float = Field(1.0, gt=0)
    lookahead_steps: Optional[int] = Field(None, ge=2)  # Lookahead's k; None: off
    lookahead_alpha: float = Field(0.5, gt=0, le=1)
    ema: bool = False  # predict with an exponential moving average of the weights
    ema_momentum: float = Field(0.99, gt=0, lt=1)
    swa_epochs: Optional[int] = Field(None, ge=2)  # SWA: average the weights of the last N epochs
    sam_rho: Optional[float] = Field(None, gt=0)  # sharpness-aware minimization radius; None: off
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # classification
    # Classification: ts-mix chooses the epoch by the validation log loss after temperature scaling
    # and predicts with the chosen network's temperature, fitted on its validation rows
    # (training/calibration.py); none: the network's own probabilities.
    calibration: Literal["none", "ts-mix"] = "none"
    # Regression loss: mse (on the transformed target), or poisson (a log link on the raw target:
    # predictions stay positive; for counts). auto: poisson for count-like targets (non-negative
    # integers, right-skewed) unless the metric is scored on a log scale; else mse.
    loss: Literal["auto", "mse", "poisson"] = "auto"
    mixup_alpha: float = Field(0.0, ge=0)  # Mixup's Beta(alpha, alpha); 0: off
    # Pseudo-labels (classification): a second stage in which each fold also trains on the test rows
    # that its own first-stage models predict with at least this confidence (top class probability),
    # labelled with that class (cv/pseudo.py: the leakage rule). None: off.
    pseudo_label: Optional[float] = Field(None, gt=0, lt=1)
    cutmix_alpha: float = Field(0.0, ge=0)  # images: CutMix's Beta(alpha, alpha); with Mixup, one per batch
    grad_accum_steps: int = Field(1, ge=1)  # micro-batches per optimizer step
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = "auto"
    jit_compile: Optional[bool] = None  # XLA; None: Keras' default
    strategy: Literal["auto", "default", "mirrored", "multi_worker", "tpu"] = "auto"
    seeds: int = Field(1, ge=1)  # seed averaging: models per fold, each with its own seed
    # Checkpoint ensemble: which weights of each model predict (averaged): best, last, swa.
    checkpoints: list[Literal["best", "last", "swa"]] = ["best"]
    # best: the mean of the predictions of this many best epochs (by the monitored value), each
    # kept as a network of its own (model_best.keras, model_best2.keras, ...); 1: the best epoch.
    best_epochs: int = Field(1, ge=1)
    early_stopping: Optional[int] = Field(10, ge=1)  # patience in epochs; None: off
    # Stop once the next epoch would pass early_stopping_factor x the best epoch + early_stopping
    # (RealMLP's authors' rule, for schedules with restarts); None: Keras' patience (factor 1).
    early_stopping_factor: Optional[float] = Field(None, ge=1)
    # What early stopping, ReduceLROnPlateau and the "best" checkpoint watch on the validation rows:
    # the competition metric or the loss. auto: the metric when history_metric computes it (and
    # not with ema), else the loss.
    monitor: Literal["auto", "metric", "loss"] = "auto"
    reduce_lr: Optional[int] = Field(5, ge=1)  # ReduceLROnPlateau patience; None: off
    reduce_lr_factor: float = Field(0.5, gt=0, lt=1)
    seed: int = 42
    deterministic: bool = False  # tf.config.experimental.enable_op_determinism()
    # Batches per call into TensorFlow; auto: 32, or the epoch's batches when fewer (trainer.py).
    steps_per_execution: Union[Annotated[int, Field(ge=1)], Literal["auto"]] = "auto"
    # Folds trained at once, each in its own worker process (cv/workers.py); auto: one per core on a
    # CPU (a few more where the folds do not divide among the cores: 3 for 5 folds on 2 cores) for
    # tabular runs of at least 10,000 rows with a Keras member, else 1.
    fold_workers: Union[Annotated[int, Field(ge=1)], Literal["auto"]] = "auto"
    predict_batch_size: int = Field(4096, ge=1)
    log_every: int = Field(10, ge=1)  # one progress line every N epochs (and the last)
    # history.csv: the competition metric on the validation rows every epoch (one prediction pass
    # of them per epoch); off: loss and val_loss only.
    history_metric: bool = True
    tensorboard: bool = False  # TensorBoard logs in each fold folder (folds/fold_K/tensorboard/)

    @model_validator(mode="after")
    def _consistent(self):
        if self.monitor == "metric" and (self.ema or not self.history_metric):
            raise ValueError("train.monitor=metric needs the metric every epoch: set train.history_metric=true "
                             "and train.ema=false, or use train.monitor=loss")
        if "swa" in self.checkpoints and not self.swa_epochs:
            raise ValueError("train.checkpoints has swa but train.swa_epochs is not set; set e.g. 10")
        if not self.checkpoints:
            raise ValueError("train.checkpoints must name at least one of best, last, swa")
        if len(set(self.checkpoints)) != len(self.checkpoints):
            raise ValueError(f"train.checkpoints repeats a name: {self.checkpoints}")
        return self


# An image competition's training where its config sets none (tabular ones keep TrainConfig's):
# 30 epochs of batches of 64 on a one-cycle schedule, every epoch kept (no early stopping),
# chosen on mnist's digits at 28 and 8 pixels (bench/images.py --part defaults, README).
IMAGE_TRAIN = {"epochs": 30, "batch_size": 64, "lr": 0.003, "weight_decay": 1e-4, "schedule": "onecycle",
               "early_stopping": None}


class ParamSpec(_Section):
    """One tuned parameter: ``tune.space.<dotted config key>``."""

    type: Literal["float", "int", "categorical", "layers"]
    low: Optional[float] = None  # float / int; layers: the smallest width
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[list[Any]] = None  # categorical
    # layers (a list of widths such as model.hidden): a depth, then one width per layer, so the
    # width of layer 3 exists only in trials whose depth is at least 3.
    min_layers: int = Field(1, ge=1)
    max_layers: int = Field(3, ge=1)
    # Conditional: suggested only when the named parameters took one of the listed values.
    when: Optional[dict[str, list[Any]]] = None

    @model_validator(mode="after")
    def _complete(self):
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs choices: [...]")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"a {self.type} parameter needs low < high, got low={self.low}, high={self.high}")
        elif self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        if self.type == "layers" and self.min_layers > self.max_layers:
            raise ValueError("min_layers must not exceed max_layers")
        return self


class TuneConfig(_Section):
    """``--tune``: an Optuna study whose objective is the CV score of this config."""

    trials: int = Field(20, ge=1)
    timeout: Optional[float] = Field(None, gt=0)  # seconds; no new trial starts after it
    study: Optional[str] = None  # default: "<competition>-<model.name>"
    # None: SQLite in outputs/<comp>/studies/<study>/; an RDB URL (postgresql://, mysql://,
    # sqlite:///...); or a journal file (a path ending .log/.journal/.jsonl, or journal:PATH) that
    # several processes or machines share, e.g. kept in a Kaggle dataset between sessions.
    storage: Optional[str] = None
    seed: int = 42  # TPE sampler seed
    folds: Optional[int] = Field(None, ge=1)  # evaluate the first N folds only (speed)
    max_epochs: Optional[int] = Field(None, ge=1)  # cap train.epochs in trials (speed)
    # median / hyperband: per epoch on the first fold's validation loss; wilcoxon: across folds on
    # the fold scores (Optuna's WilcoxonPruner).
    pruner: Literal["none", "median", "hyperband", "wilcoxon"] = "median"
    pruner_warmup_epochs: int = Field(3, ge=0)  # median: never prune before this many epochs
    # Wilcoxon's one-sided exact p-value with every fold worse is 0.25 after 2 folds, 0.125 after 3
    # and 0.0625 after 4: 0.3 stops a trial that is worse on its first 2 folds.
    wilcoxon_p: float = Field(0.3, gt=0, lt=1)
    # Each trial in its own process, so TensorFlow's memory does not grow from trial to trial.
    # None: on for studies of 10 trials or more, and whenever jobs > 1.
    isolate: Optional[bool] = None
    jobs: int = Field(1, ge=1)  # worker processes on the study
    space: dict[str, ParamSpec] = {}  # empty: the model family's default space


class ExportConfig(_Section):
    """``--export`` / ``--export-run``: TFLite artifacts of a finished run's fold model."""

    # Post-training: float32 float16 dynamic int8. Compressed, then INT8: qat, prune, prune24 (2:4),
    # cluster, pqat (pruning-preserving QAT), cqat (cluster-preserving QAT), lowrank, distill.
    artifacts: list[Literal["float32", "float16", "dynamic", "int8", "qat", "prune", "prune24", "cluster", "pqat",
                            "cqat", "lowrank", "distill"]] = ["float32", "float16", "dynamic", "int8"]
    fold: int = Field(0, ge=0)  # which fold's model (its validation rows are its OOF rows)
    int8_io: bool = True  # full-INT8 inputs/outputs (False: float in, float out around the INT8 body)
    allow_float_fallback: bool = True  # ops with no integer kernel stay float instead of failing
    # INT8 weight scales per output channel, or one per tensor (a smaller file: per-channel scales
    # and zero points take 12 bytes a channel, a third of a small MLP's INT8 file). None: per tensor
    # for models without convolutions (equalized, they lose no more), per channel for CNNs.
    per_channel: Optional[bool] = None
    # Float-exact rescaling before INT8 (pipeline/export/equalize.py): embeddings to the numeric
    # range, cross-layer equalization of Dense pairs.
    equalize: bool = True
    representative_rows: int = Field(500, ge=1)  # calibration rows, drawn from the fold's training rows
    # Calibration clips numeric inputs to these percentiles of the fold's training rows (and 100
    # minus it), so a few outliers do not widen the input's INT8 range for every row. 0: min/max.
    calibration_percentile: float = Field(0.1, ge=0, lt=50)
    latency_runs: int = Field(50, ge=5)  # timed 1-row calls per artifact and delegate (256 rows: a fifth)
    seed: int = 0
    finetune_epochs: int = Field(3, ge=1)  # fine-tuning after QAT / pruning / clustering / low-rank
    finetune_lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(256, ge=1)
    sparsity: float = Field(0.5, gt=0, lt=1)  # prune / pqat: the share of weights set to zero
    clusters: int = Field(16, ge=2)  # cluster / cqat: unique weights per layer
    rank: Optional[int] = Field(None, ge=1)  # lowrank: fixed rank, or by retained energy
    energy: float = Field(0.9, gt=0, le=1)
    teacher_run: Optional[str] = None  # distill: the teacher (its same-fold models); None: this run's fold
    # distill: the student's Dense widths and conv filters (None: half the teacher's), trained for
    # student_epochs (None: train.epochs) with the competition's optimizer, schedule and augmentation.
    student_hidden: Optional[list[int]] = None
    student_filters: Optional[list[int]] = None
    student_epochs: Optional[int] = Field(None, ge=1)
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.3, ge=0, le=1)  # weight of the labels; 1 - alpha on the teacher's soft targets


class DiagnosticsConfig(_Section):
    """What a finished run writes beside its scores (pipeline/diagnostics.py, report.html)."""

    plots: bool = True  # learning curves, OOF diagnostics, per-fold scores
    importance: bool = True  # permutation importance on OOF rows
    importance_rows: int = Field(2000, ge=10)  # OOF rows per fold it scores
    importance_folds: int = Field(2, ge=1)  # of the first repeat
    importance_repeats: int = Field(3, ge=1)
    adversarial: bool = True  # train vs test classifier
    adversarial_rows: int = Field(10000, ge=10)  # per side
    report: bool = True  # report.html


class EnsembleConfig(_Section):
    """How a run weighs its members (model.members): pipeline/ensemble.py."""

    # caruana: greedy ensemble selection with replacement on the OOF predictions (Caruana et al.
    # 2004, as AutoGluon's WeightedEnsemble); mean: equal weights; fixed: ``weights`` as given.
    method: Literal["caruana", "mean", "fixed"] = "caruana"
    weights: dict[str, float] = {}  # method fixed: member name -> weight (normalized to sum to one)
    rounds: int = Field(50, ge=1)  # caruana: additions (the best round gives the weights; 50: shares in 2% steps)

    @model_validator(mode="after")
    def _fixed(self):
        if self.method == "fixed" and (not self.weights or min(self.weights.values()) < 0
                                       or sum(self.weights.values()) <= 0):
            raise ValueError("ensemble.method=fixed needs ensemble.weights: {member: weight, ...}, each >= 0, "
                             "not all 0")
        if self.weights and self.method != "fixed":
            raise ValueError("ensemble.weights is used with ensemble.method=fixed; set it, or drop the weights")
        return self


class StackConfig(_Section):
    """Level-2 over finished runs (``--stack RUN ...`` overrides runs)."""

    runs: list[str] = []
    # Each is fitted nested on the level-1 folds and reported; the best OOF one writes the outputs.
    methods: list[Literal["linear", "hill", "rank", "keras"]] = ["linear", "hill"]


class Config(_Section):
    name: str = ""
    task: Optional[Task] = None  # inferred from the target when not set
    metric: Optional[str] = None  # default per task: rmse, auc, logloss (pipeline/metrics.py)
    data: DataConfig
    cv: CVConfig = CVConfig()
    features: FeaturesConfig = FeaturesConfig()
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    model: ModelConfig = ModelConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    train: TrainConfig = TrainConfig()
    image: ImageConfig = ImageConfig()
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()
    stack: StackConfig = StackConfig()
    tune: TuneConfig = TuneConfig()
    export: ExportConfig = ExportConfig()

    _path: Optional[Path] = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _image_training(cls, raw):
        """An image competition trains with IMAGE_TRAIN where its config sets no train.* value."""
        image = raw.get("image") if isinstance(raw, dict) else None
        column = image.get("column") if isinstance(image, dict) else getattr(image, "column", None)
        train = raw.get("train") if column else None
        if column and (train is None or isinstance(train, dict)):
            raw = {**raw, "train": {**IMAGE_TRAIN, **(train or {})}}
        return raw

    @model_validator(mode="after")
    def _image_model(self):
        """The model fits the competition's inputs (an image model for an image column, and back);
        an image competition that names no model gets a CNN. An unregistered model.name is left to
        config_files.check_names, which lists the valid ones."""
        from .models import BACKBONES, IMAGE_MODELS, MODELS, PRETRAINABLE

        if self.image.column and "name" not in self.model.model_fields_set:
            self.model.name = "cnn"
        name, bb = self.model.name, self.model.backbone
        if name not in MODELS:
            return self
        if name in IMAGE_MODELS and not self.image.column:
            raise ValueError(f"model.name {name} is an image model but image.column is not set; set it to the column "
                             f"holding the image file names, or use model.name=mlp")
        if self.image.column and name not in IMAGE_MODELS:
            raise ValueError(f"image.column is set but model.name {name} has no image branch; use one of "
                             f"{sorted(IMAGE_MODELS)}")
        if name not in BACKBONES and (bb.weights or bb.head_epochs):
            raise ValueError(f"model.backbone.weights and model.backbone.head_epochs apply to backbones "
                             f"{sorted(BACKBONES)}, not model.name {name}")
        if self.image.pretrain.method and name not in PRETRAINABLE:
            raise ValueError(f"image.pretrain pretrains the encoder of model.name {' or '.join(PRETRAINABLE)}, not "
                             f"{name}; set model.name=cnn or remove image.pretrain")
        if self.image.pretrain.method and self.image.pretrain.head_epochs >= self.train.epochs:
            raise ValueError(f"image.pretrain.head_epochs ({self.image.pretrain.head_epochs}) must be below "
                             f"train.epochs ({self.train.epochs})")
        if name in BACKBONES and bb.backbone_lr_mult < 1 and self.train.ema:
            raise ValueError("train.ema is not supported with a backbone learning-rate multiplier; set "
                             "model.backbone.backbone_lr_mult=1 or train.ema=false")
        return self

    @model_validator(mode="after")
    def _consistent(self):
        if self.model.backbone.head_epochs >= self.train.epochs:
            raise ValueError(f"model.backbone.head_epochs ({self.model.backbone.head_epochs}) must be below "
                             f"train.epochs ({self.train.epochs})")
        fixed = set(self.ensemble.weights)
        if fixed and self.model.members is not None and fixed != set(self.model.members):
            raise ValueError(f"ensemble.weights names {sorted(fixed)}; model.members is {self.model.members}. "
                             f"Give one weight per member")
        if self.train.cutmix_alpha and not self.image.column:
            raise ValueError("train.cutmix_alpha mixes image patches; this competition has no image.column")
        return self

    @property
    def path(self) -> Optional[Path]:
        """The file this config was read from (None when built in code)."""
        return self._path

    @property
    def root(self) -> Path:
        """The folder relative paths in the config are resolved against."""
        return self._path.parent if self._path else Path.cwd()

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")



def schema_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every settable dotted key of the schema; a dict of sections is written as ``name.*``."""
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            paths += schema_paths(ann, path + ".")
        elif getattr(ann, "__origin__", None) is dict:
            value_type = ann.__args__[1]
            if isinstance(value_type, type) and issubclass(value_type, BaseModel):
                paths += schema_paths(value_type, path + ".*.")
            else:  # a free mapping (model.hgb): any key below it
                paths.append(path + ".*")
    return paths



# Keys of earlier versions and what replaced them, for the error that names them.
RENAMED = {"model.blend": "list the models in model.members, e.g. [mlp, hgb]",
           "model.blend_weight": "the members' weights are fitted on OOF predictions; fix them with "
                                 "ensemble.method=fixed and ensemble.weights",
           "model.blend_params": "use model.hgb.<argument> or model.linear.<argument>",
           "model.k": "TabM's settings are in model.tabm; set model.tabm.k",
           "model.params": "use model.hgb.<argument> or model.linear.<argument>",
           "model.member_params": "use model.hgb.<argument> or model.linear.<argument>",
           **{f"model.{k}": "set " + " or ".join(f"model.{f}.{k}" for f in families)
              for k, families in FAMILY_KEYS.items()}}


def _describe(error: dict) -> str:
    loc = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        parent = ".".join(str(p) for p in error["loc"][:-1])
        valid = [p for p in schema_paths(Config) if p.rsplit(".", 1)[0] == parent or
                 (not parent and "." not in p)]
        near = difflib.get_close_matches(loc, valid, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(near)}?" if near else f" Valid: {valid}"
        return f"{loc}: unknown key.{hint}"
    if error["type"] == "missing":
        return f"{loc}: required but not set."
    msg = error["msg"].removeprefix("Value error, ")
    if isinstance(error.get("input"), dict):  # a cross-field check: the message names the fields
        return f"{msg}."
    return f"{loc}: {msg}. Got {error.get('input')!r} instead."


def validate(raw: dict, source: str) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{source}: {_describe(first)}{more}") from None

