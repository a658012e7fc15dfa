"""``python run.py --comp X --export int8 ...`` / ``--export-run RUN``: convert a finished run's
fold model to TFLite artifacts, run each in LiteRT, and write ``<run>/export/``:
the .tflite files, ``preprocessing.json`` (serving without this pipeline), ``export_report.json``
and ``report.md`` (one row per artifact: size, gzip size, latency, metric and its delta against
the float Keras model, agreement with it). The folder appears whole or not at all.

Most artifacts are one fold's first Keras member (``export.fold``, of the first repeat): its OOF rows
are that fold's validation rows, so the report's OOF metric is out-of-sample for it, as is the
holdout. ``distill`` trains a student on the run's own ensemble predictions (its OOF predictions as
soft targets), so it approaches the run, every member included. The report puts the run's OOF and
holdout scores (``run_scores``, the ensemble the user saw) beside every artifact's. The entry point
opens the finished Run and ``export`` receives it: its own resolved config (with the ``--params`` it
was trained with), its fold units and artifacts; only ``export.*`` settings can be changed here.
"""
from __future__ import annotations

import gzip
import logging
import shutil
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..logs import run_logging
from ..metrics import get_metric
from ..outputs import json_text
from ..runs import Run
from ..setup import check_fixed
from ..preprocessing.table import NUMERIC_INPUT
from .equalize import equalize
from .prep_json import describe
from .tflite import PTQ_KINDS, LiteModel, convert, delegation

log = logging.getLogger("pipeline")
COMPRESSED = ("qat", "prune", "prune24", "cluster", "pqat", "cqat", "lowrank", "distill")
ARTIFACTS = PTQ_KINDS + COMPRESSED


def _arrays(inputs, split: str) -> dict[str, np.ndarray]:
    """A split's model inputs as arrays (images decoded through the same pipeline as training)."""
    batches = list(inputs.dataset(split))
    return {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]}


def _agreement(task, ref, pred) -> float:
    if task == "regression":
        return float(np.corrcoef(ref, pred)[0, 1])
    if task == "binary":
        return float(np.mean((ref > 0.5) == (pred > 0.5)))
    return float(np.mean(ref.argmax(1) == pred.argmax(1)))


def check_artifacts(artifacts, field_name: str) -> None:
    for a in artifacts:
        if a not in ARTIFACTS:
            raise ConfigError(f"{field_name} {a}: unknown artifact. Valid: {list(ARTIFACTS)}")


def export(the_run: Run, artifacts=None, *, overrides=None, data_dir=None) -> Path:
    """Write ``<run>/export/`` for a finished Run (the entry point opened it). ``overrides`` may
    change ``export.*``; other keys must agree with the run's config."""
    cfg = check_fixed(the_run, overrides, ("export",), "--export-run")
    ec = cfg.export
    artifacts = list(artifacts or ec.artifacts)
    check_artifacts(artifacts, "export.artifacts")
    unit = the_run.unit(ec.fold)
    artifact = the_run.artifact(unit)
    models = artifact.keras_paths
    if not models:
        raise DataError(f"--export-run {the_run.name}: {artifact.dir} holds no Keras model (members "
                        f"{artifact.member_names}); scikit-learn models cannot be exported to TFLite. Train a run "
                        f"with a Keras model in model.members.")
    data = the_run.load_data(data_dir, cfg)
    the_run.locked()
    try:
        export_dir = _export(the_run, data, unit, artifact, artifacts)
        from ..report import write_report

        if the_run.report_path.is_file():
            write_report(the_run)  # now with the export's section
        return export_dir
    finally:
        the_run.unlock()


def _export(the_run: Run, data, unit, artifact, artifacts: list[str]) -> Path:
    """Every artifact of one fold's Keras model, converted, scored against the float model on the
    same rows and written with the report into ``<run>/export/`` (whole, or not at all)."""
    from ..training.artifact import to_output
    from ..training.calibration import calibrate

    ec, task = data.cfg.export, artifact.task
    if not np.array_equal(np.sort(artifact.valid_idx), unit.valid_idx):
        raise DataError(f"{artifact.dir}: its validation rows differ from {the_run.folds_path}; the run folder "
                        f"was changed after training. Train it again.")
    needs_training = bool(set(artifacts) & set(COMPRESSED))  # distill: the fold's validation rows too
    inputs, x, y = _export_rows(data, artifact, unit, needs_training)
    metric = get_metric(data.cfg.metric, task)
    _quiet_converter()
    model = artifact.load_keras()
    per_channel = ec.per_channel if ec.per_channel is not None else has_conv(model)
    convert_int8 = _Int8(ec, x["rep"], per_channel)

    temperature = artifact.temperature

    def finish(raw):  # as the member predicts: its temperature, when it has one
        if temperature is not None:
            return calibrate(raw, task, temperature)
        return to_output(raw, task, artifact.target, artifact.clip)

    export_dir = the_run.export_dir
    tmp = export_dir.with_name("export.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with run_logging(tmp / "export.log"):
            ref = {k: finish(model.predict(x[k], verbose=0, batch_size=1024)) for k in y}
            report = _report_head(the_run, unit, artifact, metric, ec, per_channel,
                                  {k: metric(y[k], ref[k], task) for k in y})
            ctx = (_TrainContext(data, inputs, x["train"], data.y[unit.train_idx], artifact, the_run, unit)
                   if needs_training else None)
            for kind in artifacts:
                content, extra = _artifact_bytes(kind, model, artifact, ctx, convert_int8, len(unit.train_idx),
                                                 len(unit.valid_idx))
                path = tmp / f"{kind}.tflite"
                path.write_bytes(content)
                what = ("a student of the run's ensemble" if kind == "distill"
                        else f"one fold's model: {unit.name}'s {artifact.keras_member().name} member")
                row = {"artifact": kind, "model": what, "file": path.name, "bytes": len(content),
                       "gzip_bytes": len(gzip.compress(content, mtime=0)), **extra}
                report["artifacts"].append(_scored(row, content, x, y, ref, finish, metric, task, report))
            log.info("  latencies: %d rounds over all artifacts", LATENCY_ROUNDS)
            measure_latencies(report["artifacts"], tmp, x["valid"], ec.latency_runs)
            _write_descriptions(tmp, data, artifact, report)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(export_dir, ignore_errors=True)
    tmp.rename(export_dir)
    return export_dir


def _export_rows(data, artifact, unit, needs_training: bool):
    """The fold's rows as model inputs: a representative sample of its training rows (INT8
    calibration, clipped to the training percentiles when export.calibration_percentile is set),
    its validation rows, the holdout rows when a solution exists, and with compression all its
    training rows. Returns (the inputs, arrays by split, labels by scored split)."""
    from ..training.fold import model_inputs

    ec, pre, train_idx = data.cfg.export, artifact.preprocessor, unit.train_idx
    rng = np.random.default_rng(ec.seed)
    rep_idx = np.sort(rng.choice(train_idx, size=min(ec.representative_rows, len(train_idx)), replace=False))
    rows = {"rep": ("train", rep_idx), "valid": ("train", unit.valid_idx)}
    y = {"valid": data.y[unit.valid_idx]}
    if needs_training:
        rows["train"] = ("train", train_idx)
    if data.solution is not None:
        hold_pos, y["holdout"] = data.holdout()
        rows["holdout"] = ("test", hold_pos)
    inputs = model_inputs(data, pre, rows)
    x = {k: _arrays(inputs, k) for k in rows}
    if not len(next(iter(x["rep"].values()))):
        raise DataError(f"export: no training rows for the representative set of fold {ec.fold}.")
    if ec.calibration_percentile and NUMERIC_INPUT in x["rep"]:
        train = (x["train"][NUMERIC_INPUT] if needs_training
                 else pre.transform(data.train.iloc[train_idx])[NUMERIC_INPUT])
        x["rep"][NUMERIC_INPUT] = clip_to_percentiles(x["rep"][NUMERIC_INPUT], train, ec.calibration_percentile)
    return inputs, x, y


def _quiet_converter() -> None:
    import warnings

    # The converter's calibrator still builds tf.lite.Interpreter and warns about it on every INT8
    # conversion; the report itself runs LiteRT.
    warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
    warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")


class _Int8:
    """INT8 conversion with the export section's settings (equalized first when asked)."""

    def __init__(self, ec, rep: dict, per_channel: bool):
        self.ec, self.rep, self.per_channel = ec, rep, per_channel

    def prepare(self, model):
        return equalize(model, self.rep) if self.ec.equalize else model

    def __call__(self, model) -> bytes:
        return convert(model, "int8", self.rep, int8_io=self.ec.int8_io,
                       allow_float_fallback=self.ec.allow_float_fallback, per_channel=self.per_channel)


def _artifact_bytes(kind: str, model, artifact, ctx, int8: _Int8, n_train: int, n_valid: int) -> tuple[bytes, dict]:
    """One artifact's TFLite bytes and what its making measured."""
    if kind == "distill":  # a new model: equalized once trained
        log.info("  distill: training a student on the run's OOF predictions of %d rows", n_train + n_valid)
        student, extra = ctx.distill(model)
        return int8(int8.prepare(student)), extra
    if kind == "lowrank":
        # Equalized after: a truncated SVD of rescaled weights would minimize the wrong error.
        log.info("  lowrank: factorizing and fine-tuning on %d training rows", n_train)
        compressed, extra = ctx.make(kind, artifact.load_keras())
        return int8(int8.prepare(compressed)), extra
    if kind in COMPRESSED:
        # Equalized first: QAT learns its ranges, pruning and clustering keep their zeros and shared
        # values, on the rescaled weights. A fresh copy each time, as compression changes the
        # layers in place.
        log.info("  %s: compressing and fine-tuning on %d training rows", kind, n_train)
        compressed, extra = ctx.make(kind, int8.prepare(artifact.load_keras()))
        return int8(compressed), extra
    if kind == "int8":
        return int8(int8.prepare(artifact.load_keras())), {}
    return convert(model, kind), {}


def _report_head(the_run: Run, unit, artifact, metric, ec, per_channel: bool, float_keras: dict) -> dict:
    run_scores, keras_name = the_run.scores, artifact.keras_member().name
    first = artifact.keras_paths[0].name
    log.info("export of %s %s (%s): float Keras %s", the_run.name, unit.name, first,
             {k: round(v, 5) for k, v in float_keras.items()})
    return {"run": the_run.name, "fold": ec.fold, "fold_unit": unit.name,
            "model": f"{keras_name}/{first}", "metric": metric.name,
            "run_scores": {"cv": run_scores["cv"], "holdout": run_scores.get("holdout"),
                           "members": list(run_scores.get("members", {})),
                           "ensemble": run_scores.get("ensemble", {}).get("weights")},
            "export": ec.model_dump(mode="json"),
            "int8": {"per_channel": per_channel, "equalize": ec.equalize,
                     "calibration_percentile": ec.calibration_percentile},
            "float_keras": float_keras, "artifacts": []}


def _scored(row: dict, content: bytes, x, y, ref, finish, metric, task: str, report: dict) -> dict:
    """An artifact's row of the report: its delegation, dtypes, and per scored split its metric,
    the difference from the float model and the agreement with it."""
    lite = LiteModel(content, threads=1, xnnpack=True)
    row.update(delegation(content))
    row["dtypes"] = lite.dtypes()
    for k in y:
        pred = finish(lite.predict(x[k]))
        row[k] = metric(y[k], pred, task)
        row[f"{k}_delta"] = row[k] - report["float_keras"][k]
        row[f"{k}_agreement"] = _agreement(task, ref[k], pred)
    log.info("  %-8s %8d bytes (gzip %d), %s", row["artifact"], row["bytes"], row["gzip_bytes"],
             {k: round(row[k], 5) for k in y})
    return row


def _write_descriptions(folder: Path, data, artifact, report: dict) -> None:
    """preprocessing.json (what a device must do to raw rows), export_report.json and report.md."""
    task, target = artifact.task, artifact.target
    prep = describe(artifact.preprocessor, {c: s.missing_values for c, s in data.cfg.features.columns.items()
                                            if s.missing_values})
    if data.images is not None:
        prep["image"] = {"column": data.cfg.image.column, "size": data.cfg.image.size,
                         "channels": data.cfg.image.channels, "resize": data.cfg.image.resize,
                         "pixels": "float32 0-255; the model rescales inside"}
    prep["output"] = {"task": task, "classes": [str(c) for c in data.classes],
                      "activation": {"binary": "sigmoid", "multiclass": "softmax"}.get(task, "none"),
                      "target_transform": None if target is None else "inverse of the saved target scaler"}
    if artifact.temperature is not None:  # train.calibration ts-mix
        prep["output"]["temperature"] = {
            **artifact.temperature,
            "how": "multiply the logits by inverse_temperature before the activation (binary: the one logit), "
                   "then p = (1 - mix) * p + mix / number of classes"}
    (folder / "preprocessing.json").write_text(json_text(prep, indent=1))
    (folder / "export_report.json").write_text(json_text(report))
    (folder / "report.md").write_text(table(report))
    print(table(report))


class _TrainContext:
    """What compression needs: the fold's training rows as model inputs and fitted labels."""

    def __init__(self, data, inputs, x, y, artifact, run: Run, unit):
        from ..models.heads import encode_labels, make_loss

        task, target = artifact.task, artifact.target
        self.data, self.x, self.task, self.ec = data, x, task, data.cfg.export
        self.artifact, self.run, self.unit = artifact, run, unit
        self.inputs = inputs  # FoldInputs: the "train" split with the competition's augmentation
        self.y_raw = y
        y_fit = target.transform(y.reshape(-1, 1)).ravel() if target is not None else y
        self.y = encode_labels(y_fit, task, len(data.classes), data.cfg.train)
        self.y_fit = y_fit
        self.loss = make_loss(task, data.cfg.train)

    def make(self, kind: str, model):
        import tf_keras as keras

        from . import compress as c

        ec, x, y, loss = self.ec, self.x, self.y, self.loss
        keras.utils.set_random_seed(ec.seed)  # the same artifact from the same run, every time
        if kind == "qat":
            return c.qat(model, x, y, loss, ec), {}
        if kind in ("prune", "prune24", "pqat"):
            m_by_n = (2, 4) if kind == "prune24" else None
            out = c.pqat(model, x, y, loss, ec, ec.sparsity) if kind == "pqat" else \
                c.prune(model, x, y, loss, ec, ec.sparsity, m_by_n)
            pruned = out if kind != "pqat" else None
            extra = {"target_sparsity": 0.5 if m_by_n else ec.sparsity}
            if pruned is not None:
                extra["sparsity"] = c.kernel_sparsity(pruned)
                if m_by_n:  # a layer with fewer than 4 input channels (a grayscale first conv) stays dense
                    ok, eligible = c.two_four_layers(pruned)
                    extra.update(two_four=ok == eligible, two_four_layers=f"{ok}/{eligible}")
            return out, extra
        if kind in ("cluster", "cqat"):
            out = c.cqat(model, x, y, loss, ec, ec.clusters) if kind == "cqat" else c.cluster(model, x, y, loss, ec,
                                                                                              ec.clusters)
            extra = {"clusters": ec.clusters}
            if kind == "cluster":
                extra["max_unique_weights"] = max(len(np.unique(l.kernel.numpy())) for l in out.layers
                                                  if c._compressible(l))
            return out, extra
        out, ranks = c.low_rank(model, x, y, loss, ec, ec.rank, ec.energy)
        return out, {"ranks": ranks, "params": int(out.count_params()), "float_params": int(model.count_params())}

    def teacher(self) -> Run:
        """The run that teaches: this one, or ``export.teacher_run`` (a run on the same rows)."""
        if not self.ec.teacher_run:
            return self.run
        teacher = Run.open(self.ec.teacher_run, self.run.root, self.data.cfg.name).require_finished(
            "export.teacher_run")
        id_col = self.data.cfg.data.id
        ids = teacher.oof[id_col].astype(str).to_numpy() if teacher.oof is not None else np.array([])
        if len(ids) != len(self.data.train) or not (ids == self.data.train[id_col].astype(str).to_numpy()).all():
            raise DataError(f"export.teacher_run {self.ec.teacher_run}: its oof.csv rows are not this competition's "
                            f"training rows. Name a run trained on the same data.")
        return teacher

    def distill(self, model):
        """A smaller student of the same family, trained like the fold models (the competition's
        optimizer, schedule, batch size and augmentation) on the teacher run's ensemble OOF
        predictions of the fold's training rows (soft targets: every member of the run speaks)
        and the labels."""
        import math

        import tf_keras as keras

        from ..models import FAMILY_SECTIONS, get_builder, model_section
        from ..models.heads import output_size
        from ..models.layers import adapt_layers
        from ..training.recipes import member_config
        from ..training.optimizers import make_optimizer
        from ..training.schedules import make_schedule
        from ..training.trainer import steps_per_execution
        from .compress import distillation_loss

        from ..data.fold_inputs import FoldInputs

        teacher = self.teacher()
        # Every training row has an OOF prediction of the run, so the student learns from all of
        # them: the fold's training rows, then its validation rows (through the fold's
        # preprocessing, as prediction sees them). Its holdout stays out of sample; its score on
        # the fold's validation rows does not (the report says so).
        order = np.concatenate([self.unit.train_idx, self.unit.valid_idx])
        soft, y_raw = teacher.oof_predictions()[order], self.data.y[order]
        seen = np.isfinite(soft.reshape(len(soft), -1)).all(axis=1)  # rows a time limit left unpredicted
        order, soft, y_raw = order[seen], soft[seen], y_raw[seen]
        split = {k: np.concatenate([self.inputs.x["train"][k], self.inputs.x["valid"][k]])[seen]
                 for k in self.inputs.x["train"]}
        paths = None if self.inputs.images is None else {
            "all": np.concatenate([self.inputs.images["train"], self.inputs.images["valid"]])[seen]}
        rows = FoldInputs({"all": split}, self.data.cfg, paths)
        task = self.task
        packed = packed_targets(task, self.artifact.target, y_raw, soft, len(self.data.classes))
        cfg, ec = self.data.cfg, self.ec
        # The student is of the Keras member's family, except that realmlp and tabm teach an mlp:
        # realmlp's PBLD cosines lose accuracy in INT8 (a health_insurance student: holdout AUC
        # 0.871 against the run's 0.890) and TabM's k members are what a small model cannot afford.
        family = self.artifact.keras_member().name
        family = "mlp" if family in FAMILY_SECTIONS else family
        member = member_config(cfg, family, task)
        section = model_section(member.model, family)
        spec = model_spec(model)
        hidden, filters = student_widths(section, ec, spec.image)
        widths = {"hidden": hidden} | ({"filters": filters} if "filters" in type(section).model_fields else {})
        keras.utils.set_random_seed(ec.seed)
        student = get_builder(family)(spec, section.model_copy(update=widths), output_size(task, len(self.data.classes)),
                                      task)
        if self.inputs.images is None:
            adapt_layers(student, split, seed=ec.seed)
        # Soft targets ride along with the labels through the training dataset, so Mixup/CutMix mix
        # both alike; image augmentation changes the view, not the teacher's target for the image.
        tc = member.train.model_copy(update={"epochs": ec.student_epochs or member.train.epochs})
        steps = math.ceil(len(packed) / tc.batch_size)
        lr = make_schedule(tc, steps)
        student.compile(make_optimizer(tc, lr, net=student, total_steps=tc.epochs * steps),
                        loss=distillation_loss(task, ec.temperature, ec.alpha),
                        steps_per_execution=steps_per_execution(tc.steps_per_execution, steps))
        try:
            student.fit(rows.dataset("all", packed, training=True, seed=ec.seed, batch_size=tc.batch_size),
                        epochs=tc.epochs, verbose=0)
        finally:
            rows.close()
        # The run's Keras networks (a scikit-learn member has no parameter count to compare).
        params = sum(n.count_params() for u in teacher.trained_units() for m in teacher.artifact(u).members().values()
                     if m.kind == "keras" for n in m.networks())
        teacher_scores = teacher.scores
        return student, {"student_rows": int(len(order)), "valid_in_sample": True,
                         "student_params": int(student.count_params()), "student_hidden": hidden,
                         "student_filters": filters if spec.image is not None else None, "teacher": str(teacher.dir),
                         "teacher_cv": teacher_scores["cv"], "teacher_holdout": teacher_scores.get("holdout"),
                         "teacher_members": list(teacher_scores.get("members", {})), "student_epochs": tc.epochs,
                         "ensemble_float32_bytes": int(4 * params),
                         "temperature": ec.temperature, "alpha": ec.alpha}


def packed_targets(task: str, target, y_raw: np.ndarray, soft: np.ndarray, n_classes: int) -> np.ndarray:
    """Labels and the teacher's soft targets side by side, as distillation_loss unpacks them; a
    regression target on the scale the model learns (the fold's target transform)."""
    if task == "regression":
        y_fit = target.transform(y_raw.reshape(-1, 1)).ravel() if target is not None else y_raw
        soft = target.transform(soft.reshape(-1, 1)).ravel() if target is not None else soft
        return np.column_stack([y_fit, soft]).astype(np.float32)
    if task == "binary":
        return np.column_stack([y_raw, soft]).astype(np.float32)
    return np.hstack([np.eye(n_classes)[y_raw], soft]).astype(np.float32)


LATENCY_ROUNDS = 5


def measure_latencies(rows: list[dict], folder: Path, x: dict[str, np.ndarray], runs: int) -> None:
    """Median latency of 1 and 256 rows, with and without XNNPACK, for every artifact (1 thread).

    The artifacts take turns, in rounds, so a stretch of load on a shared machine slows them all
    alike rather than whichever was being timed, and their ratios hold."""
    models = {(r["artifact"], xnn): LiteModel((folder / r["file"]).read_bytes(), threads=1, xnnpack=xnn)
              for r in rows for xnn in (True, False)}
    per_round = {1: max(1, runs // LATENCY_ROUNDS), 256: max(1, runs // 5 // LATENCY_ROUNDS)}
    times = {}
    for _ in range(LATENCY_ROUNDS):
        for (name, xnn), lite in models.items():
            for batch, n in per_round.items():
                times.setdefault((name, xnn, batch), []).extend(lite.timings_ms(x, batch, n))
    for r in rows:
        for xnn in (True, False):
            for batch in per_round:
                tag = "xnnpack" if xnn else "no_delegate"
                r[f"latency_ms_{batch}_{tag}"] = float(np.median(times[(r["artifact"], xnn, batch)]))


def student_widths(model_cfg, ec, image=None) -> tuple[list[int], list[int]]:
    """The student's Dense widths and conv filters: as configured, or half the teacher's (a CNN
    sized to the image: half the widths it was built with)."""
    from ..models.cnn import auto_filters

    half = lambda widths: [max(4, w // 2) for w in widths]  # noqa: E731
    filters = getattr(model_cfg, "filters", [])
    if filters is None and ec.student_filters is None:
        filters = auto_filters(image[:2])
    return (list(ec.student_hidden) if ec.student_hidden is not None else half(model_cfg.hidden),
            list(ec.student_filters) if ec.student_filters is not None else half(filters))


def has_conv(model) -> bool:
    """Whether the model (or a backbone inside it) has convolutions."""
    for layer in model.layers:
        if "Conv" in type(layer).__name__ or (hasattr(layer, "layers") and has_conv(layer)):
            return True
    return False


def clip_to_percentiles(rows: np.ndarray, train: np.ndarray, percentile: float) -> np.ndarray:
    """Calibration rows with each column clipped to [p, 100 - p] percentiles of the training rows."""
    lo, hi = np.percentile(train, [percentile, 100 - percentile], axis=0)
    return np.clip(rows, lo, hi).astype(rows.dtype)


def model_spec(model):
    """The InputSpec a saved model was built from, read off its inputs and embedding layers."""
    from ..preprocessing.table import InputSpec

    shapes = {t.name.split(":")[0]: t.shape for t in model.inputs}
    embeddings = []
    for name in shapes:
        if name.startswith("cat__"):
            emb = model.get_layer(f"emb_{name}")
            embeddings.append((name, emb.input_dim, emb.output_dim))
    image = tuple(shapes["image"][1:]) if "image" in shapes else None
    return InputSpec(int(shapes["numeric"][1]) if "numeric" in shapes else 0, embeddings, image)


def table(report: dict) -> str:
    keys = [k for k in ("valid", "holdout") if k in report["float_keras"]]
    head = ["artifact", "bytes", "gzip", "ms/1 (xnn)", "ms/256 (xnn)", "ms/1 (no del.)", "ms/256 (no del.)",
            "XNNPACK nodes"] + [f"{k} {report['metric']}" for k in keys] + [f"{k} delta" for k in keys] + \
           [f"{k} agree" for k in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref = ["float Keras"] + [""] * 7 + [f"{report['float_keras'][k]:.5g}" for k in keys] + [""] * (2 * len(keys))
    lines.append("| " + " | ".join(ref) + " |")
    for r in report["artifacts"]:
        cells = [r["artifact"], str(r["bytes"]), str(r["gzip_bytes"])]
        cells += [f"{r[f'latency_ms_{b}_{t}']:.3f}" for t in ("xnnpack", "no_delegate") for b in (1, 256)]
        cells.append(f"{r['delegated_nodes']}/{r['nodes']} ({r['xnnpack_partitions']} part.)")
        cells += [f"{r[k]:.5g}" for k in keys] + [f"{r[f'{k}_delta']:+.2g}" for k in keys]
        cells += [f"{r[f'{k}_agreement']:.4f}" for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    run = report.get("run_scores")
    if run:  # what the user saw: the run's ensemble, which no single-fold artifact is
        holdout = f", holdout {run['holdout']:.5g}" if run.get("holdout") is not None else ""
        lines.append(f"\nThe run itself (ensemble of {', '.join(run['members'])}): OOF {report['metric']} "
                     f"{run['cv']:.5g}{holdout}. Every artifact but distill is one fold's Keras model "
                     f"({report['fold_unit']}); distill is a student of the run's ensemble.")
    return "\n".join(lines) + "\n"
