"""A TPE sampler whose randomness comes from (the study's seed, the trial's number).

Why not ``TPESampler(seed=tune.seed)`` as it is: every worker process of a study builds its own
sampler. With one seed they all draw the same random startup points, so a 10-trial study of
isolated workers evaluated one parameter set ten times, and a restarted study repeated trial 0.
Optuna's own parallel path (``n_jobs``) reseeds each worker from OS entropy instead, which makes
the points distinct but the study impossible to reproduce from ``tune.seed``. Optuna keeps no
sampler state in the storage, so neither of its options gives both; this small wrapper does.

Each trial gets a fresh TPESampler seeded from (seed, trial number) in ``before_trial``, which
Optuna calls with the trial's number before anything is sampled. Trial numbers are handed out once
by the storage, so workers on one study (processes or machines) sample differently, and the same
study history with the same seed samples the same points again.
"""
from __future__ import annotations

import hashlib

from optuna.samplers import BaseSampler, TPESampler


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed per (study seed, trial number); hashed so neighbouring trials are unrelated."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "little")


class TrialSeededTPESampler(BaseSampler):
    def __init__(self, seed: int, **tpe_options):
        self.seed, self._options = seed, tpe_options
        self._tpe = TPESampler(seed=seed, **tpe_options)

    def before_trial(self, study, trial) -> None:
        self._tpe = TPESampler(seed=trial_seed(self.seed, trial.number), **self._options)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        # Optuna calls this for each thread of n_jobs > 1; seeds come from trial numbers instead.
        pass
