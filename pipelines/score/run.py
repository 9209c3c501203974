"""Batch scoring of whole archives with Ray Data: per-frame scores, events, AUC and plots, tracked in MLflow.

    from pipelines.score.run import score
    from pipelines.score.config import ScoreConfig
    result = score(ScoreConfig(model="models:/memae-demo@champion", dataset="auto", root="/data/ped2", out="scores"))

The pipeline streams: one Ray task per video decodes it (or reads its shard) and hands on blocks of consecutive
frames, about one copy of each (data.py); a pool of scoring actors, each holding the model (on a GPU when the cluster
has them), cuts the blocks into clips and turns them into clip errors and, with --save-maps, per-pixel error maps
(actors.py); the driver gathers each video's clips (collect.py)
and, as soon as a video is complete, writes its per-frame scores and records it in the ledger (outputs.py,
ledger.py). A corrupt video ends in a "failed" outcome and is reported; the others are scored. At the end the tables,
metrics and plots are rebuilt from the per-video files and logged to one MLflow run (report.py); with
--incremental that run gets the tables of the videos it scored, not the whole history again.

One job writes an output folder at a time: it holds the folder's lock (pipelines/common/lock.py) from before its
start-up clean-up to its last write. Which listed videos it scores is changes.py's business: every one (replacing
their per-video files), or with --incremental the new and changed ones; --restart alone discards earlier results.
Decoding never happens in this process: the scoring pipeline, calibration and the worst-frame images decode in Ray
tasks (isolated.py), so a decoder crash costs one video.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from memae.files import remove_temporary_files, write_json_atomic
from memae.scoring import anomaly_score, frames_from_clips
from pipelines.common.lock import folder_lock
from pipelines.common.settle import gone_since_listed
from pipelines.registry.source import MLFLOW_SCHEMES, ModelSource, ScoringSettings, load_model_source, scoring_settings
from pipelines.score.actors import run_precision, score_batches
from pipelines.score.changes import found_on_disk, renamed_videos, select_videos
from pipelines.score.collect import Collector, ScoredVideos, VideoClips
from pipelines.score.config import ScoreConfig, ScoreSetupError, since_time
from pipelines.score.data import Listing, VideoOutcome, VideoUnit, list_archive, list_shards
from pipelines.score.ledger import Ledger, LedgerEntry, LedgerSection, Stamp, entry_record
from pipelines.score.outputs import Outputs, rebuild_outputs, write_video_scores
from pipelines.score.paths import UnsafePath, video_path
from pipelines.score.plots import plot_outputs
from pipelines.score.report import (
    REPORT_FILE,
    alarm_share_line,
    log_run,
    mlflow_run,
    new_alarms,
    score_report,
)
from pipelines.score.review import log_review, write_review
from pipelines.score.threshold import Threshold, choose_threshold
from pipelines.score.worst import worst_images

__all__ = ["REPORT_FILE", "ScoreResult", "ScoreSetupError", "score"]


@dataclass
class ScoreResult:
    """What one scoring job did; `ok` is False when any video failed (the others are scored)."""

    out: Path
    model_key: str
    scored: list[str]
    skipped: int
    failed: list[VideoOutcome]
    short: list[str]
    outputs: Outputs
    mlflow_run_id: str | None = None
    report: dict[str, Any] = field(default_factory=dict)
    deferred: list[VideoOutcome] = field(default_factory=list)  # left for the next run: neither scored nor failed

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class _Plan:
    """Everything decided before any video is scored."""

    out: Path
    source: ModelSource
    listing: Listing
    settings: ScoringSettings
    ledger: Ledger
    section: LedgerSection
    todo: list[VideoUnit]
    stamps: dict[str, Stamp | None]  # of the sources in `todo`, as they were before decoding
    skipped: int
    changed: list[str]  # keys in `todo` rescored because their source changed
    deferred: list[VideoOutcome]
    problems: list[VideoOutcome]  # failed before scoring: paths refused, calibration videos unreadable
    limit: Threshold
    found_on_disk: list[str] = field(default_factory=list)  # keys of complete per-video files the ledger had not
    # recorded, recorded now (a killed run's last videos)
    redone: list[str] = field(default_factory=list)  # per-video files there that are scored again: why each
    older: list[str] = field(default_factory=list)  # keys left alone: never scored, sources older than --since


def score(config: ScoreConfig, echo: Callable[[str], None] = print) -> ScoreResult:
    """Scores the videos `config` selects into `config.out`, holding the folder's lock throughout; see the module
    docstring.

    Raises:
        ScoreSetupError: when the job cannot start. Failures of single videos are reported in the result instead.
        FolderBusy: another job writes `config.out` (and did not finish within `config.wait_s`).
    """
    try:
        config.check()
        out = Path(config.out).resolve()
        out.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        raise ScoreSetupError(str(exc)) from None
    with folder_lock(out, config.wait_s), ExitStack() as cleanup:
        return _score(config, echo, cleanup)


def _score(config: ScoreConfig, echo: Callable[[str], None], cleanup: ExitStack) -> ScoreResult:
    """`score` once the output folder is this job's alone."""
    started = time.perf_counter()
    try:
        plan = _prepare(config, echo, cleanup)
    except ValueError as exc:
        raise ScoreSetupError(str(exc)) from None
    out, source, listing, settings = plan.out, plan.source, plan.listing, plan.settings
    tags = {**source.tags, "memae.dataset": listing.dataset, "memae.data": str(config.root or config.shards),
            "memae.incremental": str(config.incremental)}
    with mlflow_run(config, tags) as active:
        videos = _score_videos(plan, config, echo)
        this_run = {o.key for o in videos.outcomes if o.status in ("done", "short")} | set(plan.found_on_disk)
        run_keys = None
        if active is not None and config.incremental:  # a night logs its own videos, not the whole history again
            run_keys = this_run, Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="memae-run-tables-")))
        outputs = rebuild_outputs(out, plan.section, plan.limit, settings, config.plot_videos, config.worst_frames,
                                  config.fps, run_keys)
        plots = plot_outputs(out, outputs, plan.limit, worst_images(outputs, listing, source, settings, config, echo))
        elapsed = time.perf_counter() - started
        failed = listing.problems + plan.problems + videos.failed
        deferred = plan.deferred + videos.deferred
        report = score_report(config, source, listing, plan.skipped, videos, failed, elapsed, outputs, plan.limit,
                              plan.changed, deferred)
        report |= {"found_on_disk": len(plan.found_on_disk), "redone": plan.redone,
                   "older_than_since": len(plan.older), "results_lost": outputs.lost,
                   "results_set_aside": outputs.set_aside,
                   "new_alarms": new_alarms(outputs.summaries, this_run, plan.limit)}
        write_json_atomic(out / REPORT_FILE, report)
        page = write_review(out, config, source, listing, settings, plan.limit, plan.section, outputs, report, echo)
        if active is not None:
            log_run(config, out, outputs, plots, report, settings, plan.limit)
            log_review(page)
    for item in failed:
        echo(f"FAILED  {item.key}: {item.file}: {item.reason}")
    if outputs.metrics is not None:
        m = outputs.metrics
        alarm = m["threshold"]
        echo(f"frame AUC micro {m['auc_micro']:.4f} (the paper's, per-video min-max), macro {m['auc_macro']:.4f}, "
             f"EER {m['eer']:.4f}, AP {m['average_precision']:.4f}; archive-wide (score_global): AUC micro "
             f"{m['global']['auc_micro']:.4f}")
        echo(f"alarms: {100 * alarm['false_alarm_rate']:.1f}% of normal frames flagged (nominal "
             f"{100 * alarm['nominal_false_alarm_rate']:.1f}%), {100 * alarm['flag_recall']:.1f}% of anomalous "
             f"frames caught, precision {alarm['flag_precision']:.3f}")
    else:
        echo(outputs.metrics_note)
        share, night = report["alarms"], report["new_alarms"]["share"]
        if config.incremental and night is not None and night["frames_scored"]:  # the night first: it can drift
            echo(alarm_share_line(night, " in this run's videos"))
            echo(f"alarms in every video scored into --out: {100 * share['share']:.1f}% of the "
                 f"{share['frames_scored']:,} frames scored")
        elif share is not None:
            echo(alarm_share_line(share))
    for item in deferred:
        echo(f"deferred {item.key}: {item.file}: {item.reason}")
    if outputs.lost:
        echo(f"{len(outputs.lost)} videos scored earlier are left out of the tables, as {outputs.lost[0]}: their "
             f"per-video files in {plan.ledger.folder(source.key)} are gone or damaged (a run scores them again "
             "while their video is listed)")
    for damaged, moved in outputs.set_aside.items():
        echo(f"damaged, moved aside to be scored again: {damaged} -> {moved}")
    older = f", {len(plan.older)} older than --since" if config.since else ""
    echo(f"{'ok' if not failed else 'FAILED'}: {len(videos.scored)} scored, {plan.skipped} skipped (already scored), "
         f"{len(deferred)} deferred, {len(failed)} failed, {len(videos.short)} too short{older}; "
         f"{report['frames_scored']} frames in {elapsed:.1f}s; outputs in {out}")
    run_id = active.info.run_id if active is not None else None
    return ScoreResult(out, source.key, videos.scored, plan.skipped, failed, videos.short, outputs, run_id, report,
                       deferred)


def _prepare(config: ScoreConfig, echo: Callable[[str], None], cleanup: ExitStack) -> _Plan:
    """Model, videos, settings, ledger, what to score and threshold; raises ValueError when the job cannot start."""
    if config.mlflow or config.model.startswith(MLFLOW_SCHEMES):
        from pipelines.common.tracking import configure_mlflow

        configure_mlflow(config.tracking_uri, config.experiment)
    source = load_model_source(config.model)
    listing = _list(config)
    settings = replace(scoring_settings(source, config, listing.stored_shape), precision=run_precision(config, echo))
    rule_origin = "" if config.frame_rule else " (the model's)" if source.frame_rule else " (the default)"
    echo(f"model: {source.uri} ({source.kind}, key {source.key}); clips of {settings.clip_len} frames of "
         f"{settings.height}x{settings.width} {settings.color}, {settings.error_rule} error, "
         f"{settings.frame_rule} rule{rule_origin}")
    unlisted = f", {len(listing.unlisted)} other files (listed in {REPORT_FILE})" if listing.unlisted else ""
    echo(f"data: {listing.dataset} ({listing.evidence}): {len(listing.units)} videos to consider, "
         f"{len(listing.problems)} unusable{unlisted}")
    out = Path(config.out).resolve()
    ledger = cleanup.enter_context(Ledger(out, echo))
    section = ledger.open_section(source.key, source.tags, asdict(settings), config.restart, echo,
                                  ScoringSettings.defaults())
    new_to_the_model = not section.videos
    for stale in remove_temporary_files(out):  # this job holds the folder's lock: no other job's files in progress
        echo(f"removed a half-written file from an interrupted run: {stale}")
    units, refused = _writable(listing.units, ledger.folder(source.key))
    moves = renamed_videos(units, section)
    ledger.rekey(section, {old: (unit.key, unit.video_id) for old, unit in moves.items()})
    if moves:
        old, unit = next(iter(moves.items()))
        echo(f"{len(moves)} scored videos have new ids (as {old} is now {unit.key}): their results are kept under the "
             "new ids")
    found = found_on_disk(units, ledger, section) if config.incremental else None  # a killed run's last videos
    for item in found.redone if found else ():
        echo(f"rescoring {item}")
    now = time.time()
    not_before = since_time(config.since, now) if config.since else None
    chosen = select_videos(units, ledger, section, config.incremental, config.settle_s, config.hash, now, not_before)
    ledger.restamp(section, chosen.restamped)
    changed = f" ({len(chosen.changed)} changed since scored)" if chosen.changed else ""
    on_disk = f" ({len(found.recorded)} found complete on disk and recorded now)" if found and found.recorded else ""
    deferred = (f", {len(chosen.deferred)} deferred (modified in the last {config.settle_s:g}s)"
                if config.incremental else "")
    older = (f", {len(chosen.older)} older than --since {datetime.fromtimestamp(not_before).isoformat(' ', 'seconds')}"
             " (left alone)" if not_before is not None else "")
    echo(f"{len(chosen.todo)} videos to score{changed}, {len(chosen.skipped)} already scored by {source.key}{on_disk}"
         f"{deferred}{older}")
    if config.incremental and new_to_the_model and chosen.todo and not_before is None:
        echo(f"{source.key} has scored nothing into {out} yet, so every listed video is new to it (a new model version "
             "starts from recent footage with --since, e.g. --since 7d)")
    limit, unreadable = choose_threshold(source, settings, listing, ledger, section, config, echo)
    return _Plan(out, source, listing, settings, ledger, section, chosen.todo, chosen.stamps, len(chosen.skipped),
                 chosen.changed, chosen.deferred, refused + unreadable, limit,
                 list(found.recorded) if found else [], found.redone if found else [], chosen.older)


def _writable(units: list[VideoUnit], folder: Path) -> tuple[list[VideoUnit], list[VideoOutcome]]:
    """The videos whose output files stay inside the model's folder, and a failure for each of the others."""
    kept, refused = [], []
    for unit in units:
        try:
            video_path(folder, unit.split, unit.video_id, ".parquet")
            kept.append(unit)
        except UnsafePath as exc:
            refused.append(VideoOutcome("failed", unit.split, unit.video_id, unit.source, f"refused: {exc}"))
    return kept, refused


def _list(config: ScoreConfig) -> Listing:
    try:
        if config.shards:
            return list_shards(config.shards, config.split)
        return list_archive(config.dataset, config.root, config.split)
    except (FileNotFoundError, KeyError) as exc:
        raise ValueError(str(exc).strip("'\"")) from None


def _score_videos(plan: _Plan, config: ScoreConfig, echo: Callable[[str], None]) -> ScoredVideos:
    """Runs the pipeline; writes and records each video the moment it is complete."""
    result = ScoredVideos()
    if not plan.todo:
        return result
    folder = plan.ledger.folder(plan.source.key)
    collector = Collector(plan.todo, folder if config.save_maps else None, plan.settings.clip_len // 2)
    started = time.perf_counter()
    width = len(str(len(plan.todo)))
    for batch in score_batches(plan.todo, plan.source, plan.settings, config, echo):
        for unit, video in collector.add(batch):
            outcome = _finish(unit, video, plan, folder)
            result.outcomes.append(outcome)
            rate = collector.clips / max(time.perf_counter() - started, 1e-9)
            echo(f"[{len(result.outcomes):>{width}}/{len(plan.todo)}] {outcome.status:<6} {unit.key}: "
                 f"{video.end.num_frames} frames, {video.end.num_clips} clips  "
                 f"({collector.clips} clips, {rate:.1f} clips/s){''.join(f'; {n}' for n in outcome.notes)}")
    for unit in collector.unfinished():
        reason = "no result: its decoding or scoring task failed (see the Ray logs)"
        failure = VideoOutcome("failed", unit.split, unit.video_id, unit.source, reason)
        result.outcomes.append(_deferred_if_gone(failure, unit.source))
    result.clips = collector.clips
    return result


def _deferred_if_gone(failure: VideoOutcome, source: str) -> VideoOutcome:
    """A failure whose file no longer exists, deferred instead (`settle.gone_since_listed`): it is not recorded, so a
    later run scores it if it comes back."""
    reason = gone_since_listed(source, failure.reason, "scored")
    return failure if reason is None else replace(failure, status="deferred", reason=reason)


def _finish(unit: VideoUnit, video: VideoClips, plan: _Plan, folder: Path) -> VideoOutcome:
    """Writes a complete video's scores, then records it in the ledger (a failed one is recorded nowhere)."""
    end, settings = video.end, plan.settings
    outcome = VideoOutcome(end.status, unit.split, unit.video_id, end.file, end.reason, end.num_frames, end.num_clips,
                           end.notes)
    if end.status == "failed":
        video.discard_maps()
        return _deferred_if_gone(outcome, unit.source)
    entry = LedgerEntry(unit.video_id, unit.split, unit.source, end.num_frames, end.num_clips, end.fps, None,
                        datetime.now(timezone.utc).isoformat(timespec="seconds"), plan.stamps.get(unit.key))
    if end.status == "done":
        labels = unit.labels(end.num_frames)
        if len(labels) != end.num_frames:
            video.discard_maps()
            reason = f"{len(labels)} frame labels for {end.num_frames} decoded frames"
            return VideoOutcome("failed", unit.split, unit.video_id, unit.source, reason, end.num_frames,
                                end.num_clips)
        starts, errors = video.clip_errors()
        frame_errors = frames_from_clips(errors, starts, end.num_frames, settings.clip_len, settings.frame_rule)
        path = video_path(folder, unit.split, unit.video_id, ".parquet")
        entry = replace(entry, file=str(path.relative_to(plan.ledger.out)))
        if video.maps is not None:  # before the scores: a scores file in place means all the video's files are
            video.maps.finish(end.num_frames)
        # The file carries the row recorded next: a driver killed in between leaves it recordable by the next run.
        write_video_scores(path, unit.video_id, unit.split, frame_errors, anomaly_score(frame_errors), labels,
                           entry_record(plan.section, entry))
    plan.ledger.record(plan.section, unit.key, entry)
    return outcome
