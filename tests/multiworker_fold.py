"""One fold trained by one worker of a MultiWorkerMirroredStrategy cluster (TF_CONFIG set by the
caller), or alone: tests/test_multiworker.py starts it. Writes the fold's OOF and test predictions
and its score to an .npz file.

    python tests/multiworker_fold.py CONFIG OUT_DIR STRATEGY
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import pipeline  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)


def main(config: str, out_dir: str, strategy: str) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from pipeline.config_files import load_config
    from pipeline.cv.folds import assign_folds, fold_units
    from pipeline.data import load_competition
    from pipeline.training.fold import check_train_config, fit_fold

    cfg = load_config(config, [f"train.strategy={strategy}"])
    data = load_competition(cfg)
    check_train_config(data.cfg, data.task)  # creates the strategy before any other TensorFlow work
    unit = fold_units(assign_folds(data), 1)[0]
    out = Path(out_dir)
    result = fit_fold(data, unit.name, unit.train_idx, unit.valid_idx, out / "fold", seed=0)
    oof, test = result.members[cfg.model.name]  # the Keras member (the one the strategy distributes)
    np.savez(out / "result.npz", oof=oof, test=test, score=result.member_scores[cfg.model.name],
             valid_idx=unit.valid_idx)


if __name__ == "__main__":
    main(*sys.argv[1:4])
