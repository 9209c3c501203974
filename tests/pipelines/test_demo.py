"""The README's first command, `make demo`, end to end on a one-epoch budget: it runs, registers the model, and prints
the paper's AUC beside what an archive gets (archive-wide AUC, false alarms, recall), which match metrics.json."""

from __future__ import annotations

import json
import re

import pytest

from pipelines.demo import DemoConfig, run_demo


def test_the_demo_runs_end_to_end_and_prints_the_archive_figures_beside_the_papers(tmp_path, ray_session, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # the demo's own store, whatever an earlier test left set
    lines: list[str] = []
    result = run_demo(DemoConfig(workdir=str(tmp_path / "demo"), epochs=1), echo=lines.append)

    text = "\n".join(lines)
    metrics = json.loads((result.scores_dir / "metrics.json").read_text())
    paper = re.search(r"the paper's measure .*: micro ([0-9.]+), macro", text)
    archive = re.search(r"archive-wide .*: frame AUC ([0-9.]+)", text)
    alarms = re.search(r"alarms .*: on ([0-9.]+)% of normal test frames \(nominal 1.0%\), ([0-9]+)% of anomalous", text)
    assert paper and archive and alarms, text
    assert float(paper.group(1)) == pytest.approx(metrics["auc_micro"], abs=5e-4)
    assert float(archive.group(1)) == pytest.approx(metrics["global"]["auc_micro"], abs=5e-4)
    assert float(alarms.group(1)) == pytest.approx(100 * metrics["threshold"]["false_alarm_rate"], abs=0.05)
    assert float(alarms.group(2)) == pytest.approx(100 * metrics["threshold"]["flag_recall"], abs=0.5)
    assert result.archive_auc == metrics["global"]["auc_micro"] and result.model_version == "1"
    assert "held-out" in metrics["threshold"]["source"], "the alarm is calibrated on videos not trained on"
    # The label-free check of the alarm line (two held-out videos, each against the other's line) is printed by
    # training and travels with the registered model to the scoring job's threshold line.
    trained = re.search(r"alarm check without labels: .* on ([0-9.]+)% of its frames \(nominal 1.0%\)", text)
    scoring = re.search(r"threshold: .*each calibration video passed the line of the others on ([0-9.]+)%", text)
    assert trained and scoring and trained.group(1) == scoring.group(1), text
    assert (result.scores_dir / "report" / "index.html").is_file()
