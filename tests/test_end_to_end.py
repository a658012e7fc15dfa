"""Cut-down runs of the embedded competitions through run_competition: every output, resume, kill."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import FAST
from pipeline import run_competition
from pipeline.errors import ConfigError, PipelineError

pytestmark = pytest.mark.slow


def check_outputs(result, comp_dir, target_cols, n_train, folds=2):
    run = result.run_dir
    expected = {"config.yaml", "folds.csv", "oof.csv", "test_pred.csv", "submission.csv", "scores.json", "run.log"}
    assert expected <= {p.name for p in run.iterdir()}
    assert not [p for p in run.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    data = comp_dir / "data"
    sample = pd.read_csv(data / "sample_submission.csv.gz")
    sub = pd.read_csv(run / "submission.csv")
    assert list(sub.columns) == list(sample.columns) and sub["id"].tolist() == sample["id"].tolist()
    assert sub[target_cols].notna().all().all()
    folds = pd.read_csv(run / "folds.csv")
    assert list(folds.columns) == ["id", "fold"] and len(folds) == n_train
    assert sorted(folds.fold.unique()) == list(range(folds.fold.nunique())) and folds.fold.nunique() == folds_n(folds)
    oof = pd.read_csv(run / "oof.csv")
    assert list(oof.columns[:2]) == ["id", "fold"] and oof[target_cols].notna().all().all()
    assert oof["id"].tolist() == folds["id"].tolist() and (oof.fold == folds.fold).all()
    test_pred = pd.read_csv(run / "test_pred.csv")
    assert len(test_pred) == len(sample) and set(target_cols) <= set(test_pred.columns)
    scores = json.loads((run / "scores.json").read_text())
    assert {"metric", "cv", "folds", "holdout"} <= set(scores) and len(scores["folds"]) == folds_n(folds)
    assert scores == result.scores
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["task"] and resolved["cv"]["scheme"] != "auto"
    for k in range(folds_n(folds)):
        fold = run / "folds" / f"fold_{k}"
        assert {"preprocessing.skops", "predictions.npz", "result.json"} <= {p.name for p in fold.iterdir()}
        assert {m: (fold / m / "member.skops").is_file() for m in scores["members"]} == dict.fromkeys(scores["members"], True)
        assert list(fold.glob("*/model_best.keras"))  # the Keras member's network
    assert "fold_0 (1/2) epoch 1/2" in (run / "run.log").read_text()
    return scores


def folds_n(folds):
    return folds.fold.nunique()


def test_diamonds_end_to_end_and_no_leakage_in_saved_folds(tiny_comp, tmp_path):
    cfg = tiny_comp("diamonds")
    result = run_competition(cfg, FAST, output_dir=tmp_path / "out", run_name="r1")
    scores = check_outputs(result, cfg.parent, ["price"], 300)
    assert scores["metric"] == "rmse" and scores["cv"] > 0
    # The saved preprocessing of fold 0 learned from fold 0's training rows only.
    folds = pd.read_csv(result.run_dir / "folds.csv")
    train = pd.read_csv(cfg.parent / "data" / "train.csv.gz")
    from pipeline.training import FoldArtifact

    fold = FoldArtifact.load(result.run_dir / "folds" / "fold_0")
    scaler = fold.preprocessor.dense_.named_transformers_["num_standardize"][-1]
    rows = train[folds.fold.to_numpy() != 0]
    np.testing.assert_allclose(scaler.mean_[0], rows["carat"].mean())
    assert not np.isclose(scaler.mean_[0], train["carat"].mean())
    np.testing.assert_allclose(fold.target[-1].mean_[0], rows["price"].mean())
    # Folds are saved once per competition and reused by the next run.
    saved = list((tmp_path / "out" / "diamonds" / "folds").glob("*.csv"))
    assert len(saved) == 1
    again = run_competition(cfg, FAST + ["model.name=hgb"], output_dir=tmp_path / "out", run_name="r2")  # cheap member
    assert pd.read_csv(again.run_dir / "folds.csv").equals(folds)


def test_health_insurance_end_to_end_probabilities(tiny_comp, tmp_path):
    cfg = tiny_comp("health_insurance")
    result = run_competition(cfg, FAST, output_dir=tmp_path / "out")
    scores = check_outputs(result, cfg.parent, ["whi"], 300)
    assert scores["metric"] == "auc" and 0 <= scores["cv"] <= 1 and 0 <= scores["holdout"] <= 1
    sub = pd.read_csv(result.run_dir / "submission.csv")
    assert sub.whi.between(0, 1).all() and sub.whi.nunique() > 10  # probabilities, not labels


def test_label_submission_for_accuracy_adds_probability_columns(tiny_comp, tmp_path):
    cfg = tiny_comp("health_insurance")
    result = run_competition(cfg, FAST + ["metric=accuracy"], output_dir=tmp_path / "out")
    sub = pd.read_csv(result.run_dir / "submission.csv")
    assert set(sub.whi) <= {"yes", "no"} and list(sub.columns) == ["id", "whi"]
    oof = pd.read_csv(result.run_dir / "oof.csv")
    assert list(oof.columns) == ["id", "fold", "whi", "p_no", "p_yes"]
    np.testing.assert_allclose(oof.p_no + oof.p_yes, 1, atol=1e-6)


def test_repeats_average_oof(tiny_comp, tmp_path):
    cfg = tiny_comp("diamonds", train_rows=120)
    result = run_competition(cfg, FAST + ["cv.repeats=2", "train.epochs=1", "model.members=[mlp]"],
                             output_dir=tmp_path / "out")
    folds = pd.read_csv(result.run_dir / "folds.csv")
    assert list(folds.columns) == ["id", "fold", "fold_2"] and not (folds.fold == folds.fold_2).all()
    assert result.scores["fold_names"] == ["r1_fold_0", "r1_fold_1", "r2_fold_0", "r2_fold_1"]
    per_fold = {n: np.load(result.run_dir / "folds" / n / "predictions.npz") for n in result.scores["fold_names"]}
    oof = pd.read_csv(result.run_dir / "oof.csv")["price"].to_numpy()
    row = int(per_fold["r1_fold_0"]["valid_idx"][0])
    preds = [p["oof__mlp"][list(p["valid_idx"]).index(row)] for p in per_fold.values() if row in p["valid_idx"]]
    assert len(preds) == 2 and oof[row] == pytest.approx(np.mean(preds), rel=1e-6)


def test_killed_run_leaves_no_submission_and_resumes(tiny_comp, tmp_path, monkeypatch):
    import pipeline.cv.loop as loop

    cfg = tiny_comp("diamonds")
    real_fit = loop.fit_fold
    calls = []

    def dies_on_second_fold(data, name, *args, **kwargs):
        calls.append(name)
        if name == "fold_1":
            raise KeyboardInterrupt
        return real_fit(data, name, *args, **kwargs)

    monkeypatch.setattr(loop, "fit_fold", dies_on_second_fold)
    with pytest.raises(KeyboardInterrupt):
        run_competition(cfg, FAST, output_dir=tmp_path / "out", run_name="killed")
    run = tmp_path / "out" / "diamonds" / "killed"
    assert (run / "folds" / "fold_0" / "result.json").exists()
    assert not (run / "submission.csv").exists() and not (run / "scores.json").exists()
    assert not (run / "folds" / "fold_1").exists()

    calls.clear()
    monkeypatch.setattr(loop, "fit_fold", lambda *a, **k: (calls.append(a[1]), real_fit(*a, **k))[1])
    result = run_competition(cfg, FAST, output_dir=tmp_path / "out", run_name="killed")
    assert calls == ["fold_1"]  # fold 0 was resumed, not retrained
    assert (run / "submission.csv").exists() and len(result.scores["folds"]) == 2
    assert "fold_0 (1/2): resumed" in (run / "run.log").read_text()
    # Resuming with another config is refused rather than mixing two setups in one run.
    with pytest.raises(ConfigError, match=r"run 'killed' is finished and was made with a different config \(differs at train.lr\)"):
        run_competition(cfg, FAST + ["train.lr=0.5"], output_dir=tmp_path / "out", run_name="killed")


def test_diverging_training_writes_no_predictions(tiny_comp, tmp_path):
    cfg = tiny_comp("diamonds")
    with pytest.raises(PipelineError, match=r"fold_0 \(1/2\): the (loss became|model predicts) NaN"):
        run_competition(cfg, FAST + ["model.name=mlp", "train.lr=1e30", "train.optimizer=adam", "train.early_stopping=null",
                                     "preprocessing.target_standardize=false", "preprocessing.numeric=none"],
                        output_dir=tmp_path / "out", run_name="nan")
    run = tmp_path / "out" / "diamonds" / "nan"
    assert not (run / "folds" / "fold_0").exists() and not (run / "submission.csv").exists()


def test_smoke_and_saved_fold_predictor(tmp_path):
    from pipeline.training import load_fold_predictor

    result = run_competition("health_insurance", smoke=True, output_dir=tmp_path / "out")
    assert result.run_dir.name.startswith("smoke-") and result.scores["n_train"] == 400
    assert not (tmp_path / "out" / "health_insurance" / "folds").exists()  # smoke folds are not shared
    # A saved fold predicts its OOF rows again from raw data, without the run.
    folds = pd.read_csv(result.run_dir / "folds.csv")
    saved = np.load(result.run_dir / "folds" / "fold_0" / "predictions.npz")
    train = pd.read_csv("competitions/health_insurance/data/train.csv.gz").set_index("id")
    rows = train.loc[folds.id.to_numpy()[saved["valid_idx"]]]
    predict = load_fold_predictor(result.run_dir / "folds" / "fold_0")
    weights = result.scores["ensemble"]["weights"]  # it predicts as the run does: its members, weighed
    expected = sum(w * saved[f"oof__{m}"] for m, w in weights.items())
    np.testing.assert_allclose(predict(rows), expected, rtol=1e-4, atol=1e-6)


def test_multiclass_with_one_column_per_class(tiny_comp, tmp_path):
    """diamonds' cut as a 5-class target, scored by logloss, submitted as one probability column per class."""
    from conftest import cut

    frames = cut("diamonds")
    classes = sorted(frames["train"]["cut"].unique())
    frames["sample_submission"] = pd.DataFrame({"id": frames["test"]["id"], **{c: 0.2 for c in classes}})
    frames["solution"] = frames["test"][["id", "cut"]]
    frames["test"] = frames["test"].drop(columns=["cut"])
    frames["train"] = frames["train"].drop(columns=["price"])  # test.csv has no price either
    cfg = tiny_comp("diamonds", frames)
    result = run_competition(cfg, FAST + ["data.target=cut", "task=multiclass", "metric=logloss"], output_dir=tmp_path / "out")
    sub = pd.read_csv(result.run_dir / "submission.csv")
    assert list(sub.columns) == ["id"] + classes
    np.testing.assert_allclose(sub[classes].sum(axis=1), 1, atol=1e-5)
    assert result.scores["metric"] == "logloss" and np.isfinite(result.scores["holdout"])


def test_same_seed_same_predictions(tiny_comp, tmp_path):
    cfg = tiny_comp("health_insurance", train_rows=200, test_rows=50)
    a = run_competition(cfg, FAST, output_dir=tmp_path / "a", run_name="x")
    b = run_competition(cfg, FAST, output_dir=tmp_path / "b", run_name="x")
    pd.testing.assert_frame_equal(pd.read_csv(a.files["oof"]), pd.read_csv(b.files["oof"]))
    c = run_competition(cfg, FAST + ["train.seed=7"], output_dir=tmp_path / "c", run_name="x")
    assert not pd.read_csv(c.files["oof"]).equals(pd.read_csv(a.files["oof"]))
