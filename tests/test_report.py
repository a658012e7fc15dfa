"""Seeing what a run did: history.csv per fold, the leaderboard across runs, and report.html
rendered in a real browser (headless Chromium) with every section and image loaded."""
import json
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

import run as cli
from conftest import FAST
from pipeline import load_run, run_competition

pytestmark = pytest.mark.slow
DIAGNOSTICS = ["diagnostics.importance=true", "diagnostics.adversarial=true", "diagnostics.importance_rows=200",
               "diagnostics.adversarial_rows=300"]


def test_history_csv_has_every_epoch_of_every_fold(tiny_comp, tmp_path):
    cfg = tiny_comp("diamonds", train_rows=150, test_rows=40)
    result = run_competition(cfg, FAST + ["train.epochs=3", "train.early_stopping=null", "model.members=[mlp]"],
                             output_dir=tmp_path, run_name="h")
    for name in result.scores["fold_names"]:
        history = pd.read_csv(result.run_dir / "folds" / name / "history.csv")
        assert list(history.columns) == ["seed", "epoch", "loss", "val_loss", "val_metric", "lr", "seconds", "member"]
        assert history["epoch"].tolist() == [1, 2, 3] and np.isfinite(history["val_metric"]).all()
        # val_loss comes from the same pass as the metric (Keras' own validation pass is not run).
        assert np.isfinite(history["val_loss"]).all() and (history["val_loss"] > 0).all()
        assert history["seconds"].is_monotonic_increasing
    # The fold score is the best epoch's: the one with the best metric (train.monitor auto watches it).
    fold0 = pd.read_csv(result.run_dir / "folds" / "fold_0" / "history.csv")
    best = fold0["val_metric"].min()  # RMSE: lower is better
    assert result.scores["folds"][0] == pytest.approx(best, rel=1e-6)
    assert (result.run_dir / "plots" / "learning_curves.png").is_file()


def test_leaderboard_orders_runs_by_the_metric_and_shows_failures(tiny_comp, tmp_path, monkeypatch, capsys):
    import pipeline.cv.loop as loop

    cfg = tiny_comp("health_insurance", train_rows=200, test_rows=40)
    # Cheap members (no Keras training): the board, not the models, is what is checked.
    run_competition(cfg, FAST + ["model.name=hgb"], output_dir=tmp_path, run_name="hgb")
    run_competition(cfg, ["model.name=linear", "cv.folds=2"], output_dir=tmp_path, run_name="linear")
    real = loop.fit_fold
    monkeypatch.setattr(loop, "fit_fold", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run_competition(cfg, FAST + ["train.lr=0.01"], output_dir=tmp_path, run_name="dead")
    monkeypatch.setattr(loop, "fit_fold", real)
    board = load_run(tmp_path / "health_insurance" / "hgb").leaderboard()
    assert board["name"].tolist()[-1] == "dead" and board["state"].tolist()[-1] == "interrupted"
    finished = board[board["state"] == "finished"]
    assert finished["cv"].tolist() == sorted(finished["cv"], reverse=True)  # AUC: higher first
    assert set(finished["model"]) == {"hgb", "linear"}
    assert cli.main(["--comp", str(cfg), "--output-dir", str(tmp_path), "--leaderboard"]) == 0
    out = capsys.readouterr().out
    assert "linear" in out and "dead" in out and (tmp_path / "health_insurance" / "leaderboard.csv").is_file()
    # Regression (RMSE): lower first.
    reg = tiny_comp("diamonds", train_rows=150, test_rows=40)
    for name, extra in (("a", ["model.name=hgb"]), ("b", ["model.name=linear"])):
        run_competition(reg, FAST + extra, output_dir=tmp_path, run_name=name)
    board = load_run(tmp_path / "diamonds" / "a").leaderboard()
    assert board["cv"].tolist() == sorted(board["cv"])


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


CHECK = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt);
  const sections = Array.from(document.querySelectorAll('section')).map(s => s.id);
  document.body.setAttribute('data-check', JSON.stringify({images: imgs.length, broken, sections,
                                                          errors: window.__errors}));
});
</script>"""


@pytest.mark.parametrize("comp, extra, expected", [
    ("health_insurance", [], {"roc_pr_calibration", "confusion"}),
    ("diamonds", [], {"residuals"}),
])
def test_report_renders_in_headless_chromium(comp, extra, expected, tiny_comp, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    cfg = tiny_comp(comp, train_rows=200, test_rows=60)
    result = run_competition(cfg, FAST + DIAGNOSTICS + extra, output_dir=tmp_path, run_name="r")
    report = result.run_dir / "report.html"
    text = report.read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text  # self-contained
    for name in expected | {"learning_curves", "fold_scores", "importance"}:
        assert (result.run_dir / "plots" / f"{name}.png").is_file(), name
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", CHECK + "</body>"))
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run(args + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    marker = dom.stdout.split('data-check="', 1)[1].split('"', 1)[0].replace("&quot;", '"')
    check = json.loads(marker)
    assert check["errors"] == [] and check["broken"] == [], check
    assert check["images"] >= len(expected) + 3
    assert {"scores", "plots", "importance", "adversarial", "profile", "config"} <= set(check["sections"])
    shot = tmp_path / f"{comp}.png"
    subprocess.run(args + ["--window-size=1200,2600", f"--screenshot={shot}", report.as_uri()], capture_output=True,
                   timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10000
    if os.environ.get("REPORT_SHOTS"):  # by hand: keep the screenshots to look at
        shutil.copy(shot, os.environ["REPORT_SHOTS"])


@pytest.mark.parametrize("batch_cells", [1, 1000, 10_000_000])
def test_permutation_scores_equal_scikit_learns_permutation_importance(batch_cells):
    """The batched shuffles are scikit-learn's: same importances, whatever the batch size, and
    each column keeps its dtype (a categorical stays categorical)."""
    from sklearn.inspection import permutation_importance

    from pipeline.diagnostics import permutation_scores

    rng = np.random.default_rng(0)
    n = 120
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                      "c": pd.Categorical(rng.choice(["u", "v", "w"], size=n)), "d": rng.integers(0, 5, n)})
    y = 2 * x["a"].to_numpy() - x["b"].to_numpy() + (x["c"] == "v").to_numpy() + rng.normal(scale=0.1, size=n)
    dtypes = []

    def predict(frame):
        dtypes.append(frame["c"].dtype)
        return 2 * frame["a"].to_numpy() - 0.5 * frame["b"].to_numpy() + (frame["c"] == "v").to_numpy()

    def score(pred):
        return -float(np.mean((y - pred) ** 2))

    class Fitted:
        def fit(self, X, y=None):
            return self

        def predict(self, X):
            return predict(X)

    theirs = permutation_importance(Fitted(), x, y, scoring=lambda e, X, t: score(e.predict(X)), n_repeats=3,
                                    random_state=0)
    base, permuted = permutation_scores(predict, x, score, 3, batch_cells=batch_cells)
    np.testing.assert_allclose((base - permuted).mean(axis=1), theirs.importances_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose((base - permuted).std(axis=1), theirs.importances_std, rtol=1e-12, atol=1e-12)
    assert all(isinstance(d, pd.CategoricalDtype) for d in dtypes)
    assert theirs.importances_mean[0] > theirs.importances_mean[3] == 0  # the test can tell columns apart
