"""What a benchmark run leaves behind: the tables and figure in its output folder, and one MLflow run.

The folder holds table.md (the paper's layout, per-class AUCs, the ordering check and how each method was run),
table.csv (mean and std per method), results.csv (one AUC per method, seed and class), runs.csv (the same rows
with seconds and what each method chose or reached), config.json and figure4.png.

    paths = write_outputs(data, result, Path("outputs/bench_images/digits"))
    log_mlflow(data, result, paths["table.md"].parent, tracking_uri=None)
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from experiments.images.benchmark import NETWORKS, BenchmarkResult
from experiments.images.data import ImageDataset
from experiments.images.one_class import markdown_table, ordering_check, per_class_markdown, results_csv, summary_csv
from experiments.images.plots import reconstruction_panel
from memae.files import atomic_write

EXPERIMENT = "memae-bench-images"


def method_notes(result: BenchmarkResult) -> list[str]:
    """How each method was configured and what it chose or reached, so a reader can judge fairness."""
    cfg = result.config
    details: dict[str, dict[str, list[float]]] = {}
    for run in result.runs:
        for key, value in run.details.items():
            details.setdefault(run.result.method, {}).setdefault(key, []).append(value)
    notes = []
    nets = [m for m in cfg.methods if m in NETWORKS]
    if nets:
        notes.append(f"Networks ({', '.join(nets)}): MemAE2D widths {cfg.channels}, memory N={cfg.mem_dim}, "
                     f"lambda={cfg.shrink_thres:g} (MemAE; 0 for nonSpar), entropy alpha={cfg.entropy_alpha:g} "
                     f"(MemAE only), Adam lr={cfg.lr:g}, batch {cfg.batch_size}, {cfg.epochs} epochs, "
                     f"same initial seed and batch order; score = per-image {cfg.score_rule} reconstruction error.")
        mses = ", ".join(f"{m} {np.median(details[m]['train_mse']):.4f}" for m in nets)
        notes.append(f"Median final training MSE: {mses}.")
        for m in nets:
            if "mem_mean_active_slots" in details.get(m, {}):
                notes.append(f"{m}: median {np.median(details[m]['mem_mean_active_slots']):.1f} of {cfg.mem_dim} "
                             f"memory slots with non-zero weight per query on test images.")
    baselines = [m for m in cfg.methods if m not in NETWORKS]
    if baselines:
        comps = np.concatenate([details[m]["pca_components"] for m in baselines])
        notes.append(f"Feature space for {' and '.join(baselines)}: PCA of the [-1, 1] pixels keeping "
                     f"{cfg.pca_variance:.0%} of the training images' variance ({int(comps.min())}-"
                     f"{int(comps.max())} components), fitted on the training (normal) images only, not whitened.")
    if "OC-SVM" in baselines:
        notes.append(f"OC-SVM: RBF kernel, nu={cfg.ocsvm_nu:g}, gamma='scale' (fixed, not tuned on test labels).")
    if "KDE" in baselines:
        bandwidths = details["KDE"]["bandwidth"]
        edges = int(sum(details["KDE"]["bandwidth_on_grid_edge"]))
        notes.append(f"KDE: Gaussian, bandwidth by {cfg.kde_folds}-fold cross-validated log-likelihood on the "
                     f"training images (chosen {min(bandwidths):.3g}-{max(bandwidths):.3g}; "
                     f"{edges} of {len(bandwidths)} choices on the grid's edge).")
    return notes


def report_markdown(data: ImageDataset, result: BenchmarkResult) -> str:
    """table.md: the protocol in one paragraph, the table beside the paper's, per-class AUCs and the notes."""
    summaries = result.summaries
    cfg = result.config
    n_classes = len({r.result.normal_class for r in result.runs})
    lines = [
        f"# One-class AUC on {data.name} (the protocol of MemAE's Table 1)",
        "",
        f"{len(data.images)} images; each of {n_classes} classes in turn is normal; train on "
        f"{cfg.train_fraction:.0%} of its images, test on the rest plus anomalies from the other classes "
        f"(~{cfg.anomaly_ratio:.0%} of the test set). AUC averaged over classes; mean ± sample std over "
        f"{len(cfg.seeds)} seed(s) {list(cfg.seeds)}. The paper's columns are its Table 1 (Gong et al., ICCV 2019).",
        "",
        markdown_table(summaries),
        "",
        "## Per class (mean AUC over seeds)",
        "",
        per_class_markdown(summaries, data.class_names),
        "",
        "## Paper's ordering (MemAE ≥ MemAE-nonSpar ≥ AE > OC-SVM, KDE)",
        "",
        *[f"- {line}" for line in ordering_check(summaries)],
        "",
        "## How each method was run",
        "",
        *[f"- {note}" for note in method_notes(result)],
        "",
        f"Runtime {result.seconds:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def runs_csv(result: BenchmarkResult) -> str:
    """One row per method, seed and class: AUC, seconds, and every detail any method reported (blank if not its)."""
    keys = sorted({key for run in result.runs for key in run.details})
    lines = [",".join(["method", "seed", "normal_class", "auc", "seconds", *keys])]
    for run in result.runs:
        r = run.result
        cells = [f"{run.details[k]:.6g}" if k in run.details else "" for k in keys]
        lines.append(",".join([r.method, str(r.seed), str(r.normal_class), f"{r.auc:.6f}", f"{run.seconds:.2f}",
                               *cells]))
    return "\n".join(lines) + "\n"


def write_outputs(data: ImageDataset, result: BenchmarkResult, out: Path) -> dict[str, Path]:
    """Writes every file of the run into `out` (each whole or absent); returns them by name."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"table.md": report_markdown(data, result), "table.csv": summary_csv(result.summaries),
             "results.csv": results_csv(result.results), "runs.csv": runs_csv(result),
             "config.json": json.dumps({"dataset": data.name, **asdict(result.config)}, indent=2) + "\n"}
    paths = {}
    for name, text in files.items():
        paths[name] = out / name
        with atomic_write(paths[name]) as tmp:
            tmp.write_text(text)
    if result.figure is not None:
        fig = result.figure
        paths["figure4.png"] = reconstruction_panel(
            fig.inputs, fig.reconstructions, out / "figure4.png",
            title=f"{data.name}: trained on class {data.class_names[fig.normal_class]} as normal; "
                  f"the inputs are anomalies (seed {result.config.seeds[0]})",
            column_labels=[f"class {data.class_names[c]}" for c in fig.anomaly_classes],
        )
    return paths


def log_mlflow(data: ImageDataset, result: BenchmarkResult, out: Path, tracking_uri: str | None) -> str:
    """One run: the config as params, per-class and summary AUCs as metrics, the output folder as artifacts.

    Returns the store and run id, for the job to print.
    """
    from pipelines.common.tracking import configure_mlflow

    uri = configure_mlflow(tracking_uri, experiment=EXPERIMENT)
    import mlflow

    params = {key: str(value) for key, value in asdict(result.config).items()}
    params.update(dataset=data.name, num_images=str(len(data.images)),
                  image_shape="x".join(map(str, data.images.shape[1:])),
                  baseline_features=f"PCA({result.config.pca_variance}) of [-1,1] pixels, fitted on training images")
    metrics = {}
    for s in result.summaries:
        metrics[f"auc_mean.{s.method}"] = s.mean
        metrics[f"auc_std.{s.method}"] = s.std
        metrics.update({f"auc_class_{c}.{s.method}": auc for c, auc in s.per_class.items()})
    with mlflow.start_run(run_name=f"{data.name}-{len(result.config.seeds)}seeds") as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        for s in result.summaries:  # one point per seed: the class-averaged AUC, step = seed
            for seed, auc in s.per_seed.items():
                mlflow.log_metric(f"auc_seed.{s.method}", auc, step=seed)
        mlflow.log_metric("runtime_s", result.seconds)
        mlflow.log_artifacts(str(out))
    return f"{uri} (run {run.info.run_id})"
