"""One resolution step: what a command works on, resolved once at the entry point.

``run.py`` and ``api.py`` call ``Setup.resolve`` once per command, then hand the Setup (or a Run
made from it) down: training (``runner.train``), a study (``tuning.study.run_study``), a stack
(``stacking.stack.stack``), the LR range test (``runner.lr_find``). Export and predict receive
the finished Run that ``Setup.open_run`` opens. Nothing below the entry points reads a config
file, re-applies ``--smoke`` or builds an output path: the paths are the Setup's and the Run's.

The config resolved here is the one before the data is read (base + ``--params`` overlay +
``--set`` + ``--smoke``'s settings); the settings inferred from the data (data/infer.py) are in
``setup.data.cfg``, which a run keeps as its config.yaml.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .config import Config
from .paths import check_name

if TYPE_CHECKING:
    from .runs import Run

# --smoke: the whole path on a small sample, for checking shapes and configs before a long run.
SMOKE_OVERRIDES = {"cv.folds": 2, "cv.repeats": 1, "train.epochs": 1, "model.realmlp.epochs": 1,
                   "model.tabm.epochs": 1, "image.pretrain.epochs": 1, "image.pretrain.head_epochs": 0}
SMOKE_ROWS = 400
# A tuning trial's parameters under these keys change how the files are read or checked, or what
# is inferred from them before any setting: its data is read again. Any other parameter (model,
# train, ensemble, the rest of preprocessing) reuses the study's rows, the settings inferred again.
READS_DATA = ("name", "task", "metric", "data", "features", "cv", "image", "preprocessing.target_log1p")


@dataclass
class Setup:
    """A command's inputs: the config, the output root, the data folder given, smoke mode."""

    cfg: Config
    output: Path  # the output root as given; ``root`` proves it writable on first use
    data_dir: Path | None = None
    smoke: bool = False
    writable: bool = True
    _data: object = field(default=None, repr=False, compare=False)
    _proven: bool = field(default=False, repr=False, compare=False)

    @classmethod
    def resolve(cls, comp, overrides=None, params=None, *, data_dir=None, output_dir=None, smoke: bool = False,
                writable: bool = True) -> "Setup":
        """The config resolved once (base + ``params`` overlay + ``overrides``, then --smoke's
        settings) and the output root (``outputs/`` or ``output_dir``; it must be writable unless
        the command only reads it: predict, the leaderboard)."""
        from .config_files import apply_overrides, load_config, resolve
        from .outputs import output_root

        cfg = load_config(comp, overrides, params)
        if smoke:
            cfg = resolve(apply_overrides(cfg.to_dict(), SMOKE_OVERRIDES, "--smoke"), f"{cfg.path} with --smoke",
                          cfg.path)
        return cls(cfg, output_root(output_dir, writable=False), Path(data_dir) if data_dir is not None else None,
                   smoke, writable)

    @property
    def root(self) -> Path:
        """The output root, created and proven writable the first time a command needs it: an
        argument refused before then leaves nothing written."""
        if self.writable and not self._proven:
            from .outputs import ensure_writable

            ensure_writable(self.output)
            self._proven = True
        return self.output

    # ------------------------------------------------------------------ data

    @property
    def data(self):
        """The competition's data, read, checked and (--smoke) sampled on first use, once."""
        if self._data is None:
            from .data import load_competition

            data = load_competition(self.cfg, self.data_dir)
            self._data = smoke_sample(data) if self.smoke else data
        return self._data

    def data_for(self, cfg: Config):
        """The data under another config of the same competition (a tuning trial's): the same rows
        with the settings inferred again, or read again when ``cfg`` reads them differently."""
        from .data.infer import resolved_config, scoring
        from .runs import config_diff

        moved = config_diff(self.cfg.to_dict(), cfg.to_dict())
        if any(k == r or k.startswith(r + ".") for k in moved for r in READS_DATA):
            return dataclasses.replace(self, cfg=cfg, _data=None).data
        base = self.data
        metric, scheme = scoring(cfg, base.task)
        return dataclasses.replace(base, cfg=resolved_config(cfg, base.task, metric, scheme, base.columns, base.y,
                                                             base.images))

    def __getstate__(self):  # a Setup goes to worker processes without its rows: each reads them once
        return {**self.__dict__, "_data": None}

    # ------------------------------------------------------------------ paths

    @property
    def comp_dir(self) -> Path:
        """``<output root>/<competition>/``: its runs, studies, folds and LR curves."""
        return self.root / check_name(self.cfg.name, "competition name")

    @property
    def folds_dir(self) -> Path:
        """Where the competition's fold assignments are saved once and reused by every run and trial."""
        from .runs import shared_folds_dir

        return shared_folds_dir(self.root, self.cfg.name)

    def study_dir(self, name: str) -> Path:
        return self.comp_dir / "studies" / check_name(name, "--study")

    def lr_find_path(self, stamp: str) -> Path:
        return self.comp_dir / "lr_find" / f"{stamp}.png"

    # ------------------------------------------------------------------ runs

    def create_run(self, run_name: str | None = None, *, kind: str = "train", extra: dict | None = None, data=None):
        """Start (or resume) a run of this Setup's data (or ``data``, a stack's) under the output root."""
        from .runs import Run

        return Run.create(data if data is not None else self.data, self.root, run_name, kind=kind, smoke=self.smoke,
                          extra=extra, data_dir=self.data_dir)

    def open_run(self, run: str | Path, what: str):
        """A run of this competition (its name, or its folder under the output root)."""
        from .runs import Run

        return Run.open(run, self.root, self.cfg.name, what=what)


def smoke_sample(data, rows: int = SMOKE_ROWS):
    """--smoke's rows: a stratified sample (classification) of the training rows."""
    from sklearn.model_selection import train_test_split

    seed = data.cfg.cv.seed
    if len(data.train) <= rows:
        return data
    strat = data.y if data.task != "regression" else None
    idx, _ = train_test_split(np.arange(len(data.train)), train_size=rows, random_state=seed, stratify=strat)
    idx = np.sort(idx)
    images = None if data.images is None else {**data.images, "train": data.images["train"][idx]}
    return dataclasses.replace(data, train=data.train.iloc[idx].reset_index(drop=True), y=data.y[idx], images=images)


def check_fixed(run: "Run", overrides: list[str] | dict | None, allowed: tuple[str, ...], command: str) -> Config:
    """A command on a finished run may change only ``allowed`` sections; a ``--set`` of anything
    else must agree with the run's config (it was trained with it). Returns the run's config with
    the allowed overrides applied."""
    from .config import validate
    from .config_files import apply_overrides
    from .errors import ConfigError
    from .runs import config_diff

    if not overrides:
        return run.cfg
    saved = run.cfg.to_dict()
    changed = apply_overrides(saved, overrides)
    differs = [k for k in config_diff(saved, changed) if k.split(".")[0] not in allowed]
    if differs:
        raise ConfigError(f"{command}: --set {', '.join(differs[:3])} differs from run {run.name}'s config; a "
                          f"finished run keeps the settings it was trained with (only {', '.join(allowed)}.* "
                          f"can change). Train a new run for other settings.")
    cfg = validate(changed, f"{run.config_path} with --set")
    cfg._path = run.cfg.path
    return cfg
