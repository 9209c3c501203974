"""The morning review: after every scoring run, one static page that shows each alarm as a short clip.

    OUT/report/index.html    self-contained (no server, no internet): a summary of the run, one card per alarm
                             segment ordered by peak score (camera, video, start and end, duration, an animation of
                             the frames beside their error map, the video's score curve with the alarm marked),
                             filters by camera and minimum score; also in the run's MLflow artifacts under report/
    OUT/report/history.json  each page's alarm count, so that a nightly (--incremental) page can show the night before
    OUT/report/pages/        with --incremental, every page also kept under its finishing time (the newest
                             KEPT_PAGES), and linked from the pages after it: the weekend's nights are there on Monday

The score on the page is `score_global` (pipelines/score/outputs.py): one scale for every video, 1 at the calibrated
threshold. With --incremental the page shows the alarms of the videos scored since the previous page, so a killed
night finished by a rerun loses none; otherwise those of the videos this run listed. A page that cannot be made is
said on the console and does not fail the run: the scores are written by then.

Size stays bounded on any archive: at most --review-cards cards, and only those get an animation (each under
`previews.PREVIEW_BYTES`); the next TABLE_ROWS alarms are rows of a table, the rest only counted (segments.parquet
holds them all).

    page = write_review(out, config, source, listing, settings, limit, section, outputs, report)
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from memae.datasets.cameras import camera_of
from memae.files import atomic_write, write_json_atomic
from pipelines.registry.source import ModelSource, ScoringSettings
from pipelines.score.config import ScoreConfig
from pipelines.score.data import Listing
from pipelines.score.frame_tables import columns_of
from pipelines.score.ledger import LedgerSection
from pipelines.score.outputs import Outputs
from pipelines.score.previews import Preview, VideoRequest, render_previews
from pipelines.score.report import alarm_share_text
from pipelines.score.review_page import Alarm, Card, PageContent, render_page, without_earlier_links
from pipelines.score.threshold import Threshold

REVIEW_DIR, PAGE_FILE, HISTORY_FILE = "report", "index.html", "history.json"
TABLE_ROWS = 500  # alarms listed in the table after the cards; beyond that they are only counted
FAILED_ROWS = 500  # failed videos listed by name; beyond that only counted
HISTORY_PAGES = 100  # earlier pages remembered in history.json
PAGES_DIR = "pages"  # under report/: the nightly pages kept
KEPT_PAGES = 30  # nightly pages kept (each at most --review-cards previews of previews.PREVIEW_BYTES)

Previewer = Callable[[list[VideoRequest]], Mapping[str, list[Preview]]]


def review_page(out: str | Path) -> Path:
    """Where the review page of output folder `out` is."""
    return Path(out) / REVIEW_DIR / PAGE_FILE


def write_review(out: Path, config: ScoreConfig, source: ModelSource, listing: Listing, settings: ScoringSettings,
                 limit: Threshold, section: LedgerSection, outputs: Outputs, report: Mapping[str, Any],
                 echo: Callable[[str], None] = print, previewer: Previewer | None = None) -> Path | None:
    """Writes OUT/report/index.html (atomically) and its history entry; returns its path, or None with --review false
    or when the page could not be made (said on the console: the scores are written and the run goes on).

    Args:
        section: the model's ledger section, for when each video was scored.
        report: score_report.json's content (counts, failures).
        previewer: makes the animations; by default `previews.render_previews` (decoding in Ray tasks).
    """
    if not config.review:
        return None
    if previewer is None:
        def previewer(requests: list[VideoRequest]) -> Mapping[str, list[Preview]]:
            return render_previews(requests, source, settings, config, echo)
    try:
        return _write_review(out, config, source, listing, settings, limit, section, outputs, report, echo, previewer)
    except Exception as exc:  # a page is a view of outputs already written: it must not fail the run
        echo(f"review page not written: {type(exc).__name__}: {exc}")
        return None


def _write_review(out: Path, config: ScoreConfig, source: ModelSource, listing: Listing, settings: ScoringSettings,
                  limit: Threshold, section: LedgerSection, outputs: Outputs, report: Mapping[str, Any],
                  echo: Callable[[str], None], previewer: Previewer) -> Path:
    folder = out / REVIEW_DIR
    history = read_history(folder) if config.incremental else []
    since = history[-1]["finished"] if history else None
    videos = _page_videos(outputs.summaries, listing, section, config.incremental, since)
    alarms = alarms_of(videos, listing.dataset, config.root)
    count = max(0, config.review_cards)
    chosen, rest = alarms[:count], alarms[count : count + TABLE_ROWS]
    scan = scan_scores(outputs, {a.key for a in chosen}, [*chosen, *rest])
    chosen, rest = [scan.scored(a) for a in chosen], [scan.scored(a) for a in rest]
    requests = preview_requests(chosen, videos, listing, config.fps)
    previews = previewer(requests) if requests else {}
    num_frames = {s["key"]: s["num_frames"] for s in videos}
    cards = [Card(a, preview, scan.curve(a.key, num_frames[a.key]))
             for a, preview in zip(chosen, _in_order(chosen, requests, previews), strict=True)]
    entry = {"finished": report["finished"], "model": _model_name(source), "videos": len(videos),
             "alarms": len(alarms)}
    if config.incremental:
        entry["page"] = kept_page_name(report["finished"])
    content = PageContent(
        title=f"Alarms: {_model_name(source)} on {listing.dataset}, {report['finished']}",
        facts=_facts(config, source, listing, limit, outputs, report, videos, alarms, since, history, scan),
        failed=list(report["failed"][:FAILED_ROWS]),
        skipped=_skipped(report, source, settings),
        cards=cards,
        rest=rest,
        unlisted=len(alarms) - len(chosen) - len(rest),
        score_note=_score_note(limit),
        threshold_score=1.0 if limit.error is not None else None,
        earlier=_earlier_pages(folder, history),
    )
    if "page" in entry:
        with atomic_write(folder / PAGES_DIR / entry["page"]) as tmp:
            tmp.write_text(render_page(content), encoding="utf-8")
    page = folder / PAGE_FILE
    with atomic_write(page) as tmp:
        tmp.write_text(render_page(content, pages_href=f"{PAGES_DIR}/"), encoding="utf-8")
    history = [*history, entry][-HISTORY_PAGES:]
    write_json_atomic(folder / HISTORY_FILE, history)
    if config.incremental:
        _prune_pages(folder / PAGES_DIR, {h.get("page") for h in history[-KEPT_PAGES:]})
    missing = sum(card.preview.image is None for card in cards)
    echo(f"review page: {len(alarms)} alarms, {len(cards)} cards ({missing} without preview), "
         f"{page.stat().st_size / 1e6:.2f} MB: {page}")
    return page


def log_review(page: Path | None) -> None:
    """Adds the page to the active MLflow run's artifacts (report/index.html), where the MLflow UI shows it, without
    the links to earlier nightly pages: those are kept in --out, not in the run."""
    if page is None:
        return
    import mlflow

    with tempfile.TemporaryDirectory(prefix="memae-review-") as tmp:
        copy = Path(tmp) / page.name
        copy.write_text(without_earlier_links(page.read_text(encoding="utf-8")), encoding="utf-8")
        mlflow.log_artifact(str(copy), REVIEW_DIR)


def kept_page_name(finished: str) -> str:
    """The file name a nightly page is kept under: the time its run finished."""
    return re.sub(r"[^0-9A-Za-z]+", "-", finished).strip("-") + ".html"


def _earlier_pages(folder: Path, history: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    """(file name, what it held) of the pages before this one that stay kept beside it, newest first."""
    staying = history[len(history) - KEPT_PAGES + 1 :] if KEPT_PAGES > 1 else []
    return tuple((h["page"], f"{h['finished']}: {h['alarms']} alarms in {h['videos']} videos")
                 for h in reversed(staying) if isinstance(h.get("page"), str)
                 and (folder / PAGES_DIR / h["page"]).is_file())


def _prune_pages(folder: Path, keep: set[str | None]) -> None:
    """Deletes the kept pages that fell out of the newest KEPT_PAGES."""
    for path in folder.glob("*.html"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


def read_history(folder: Path) -> list[dict[str, Any]]:
    """The earlier pages' entries (finished, model, videos, alarms), oldest first; [] when none or unreadable."""
    try:
        history = json.loads((folder / HISTORY_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [h for h in history if isinstance(h, dict) and isinstance(h.get("finished"), str)] \
        if isinstance(history, list) else []


def camera_name(dataset: str, root: str | None, video_id: str) -> str:
    """The camera a video comes from, for people: ShanghaiTech's scene, in a folder of videos its camera folder
    (memae.datasets.cameras; the root's name for files directly in it); the single-camera benchmarks are one camera
    each, named after the data set."""
    camera = camera_of(video_id)
    if dataset == "shanghaitech":
        return f"scene {camera}"
    if dataset != "videos":
        return dataset
    return camera or (Path(root).resolve().name if root else dataset)


def alarms_of(summaries: Iterable[Mapping[str, Any]], dataset: str, root: str | None) -> list[Alarm]:
    """The segments of the video summaries as alarms, highest peak error first.

    score_global is one increasing map of the raw error for the whole run, so this is also the order of peak scores.
    """
    alarms = []
    for summary in summaries:
        camera = camera_name(dataset, root, summary["video_id"])
        for s in summary["segments"]:
            alarms.append(Alarm(summary["key"], summary["video_id"], camera, s["start_frame"], s["end_frame"],
                                _finite(s["start_s"]), _finite(s["end_s"]), s["peak_frame"], s["peak_value"]))
    return sorted(alarms, key=lambda a: (-a.peak_error, a.key, a.start_frame))


@dataclass
class ScoreScan:
    """What the page reads of the frame scores: score curves of the card videos, each alarm's peak score and the
    false-alarm count over labelled normal frames."""

    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # key -> (frames, scores)
    peaks: dict[tuple[str, int], float] = field(default_factory=dict)  # (key, frame) -> score_global
    normal_frames: int = 0
    false_alarms: int = 0

    def scored(self, alarm: Alarm) -> Alarm:
        """The alarm with its peak score."""
        return replace(alarm, peak_score=self.peaks.get((alarm.key, alarm.peak_frame)))

    def curve(self, key: str, num_frames: int) -> np.ndarray:
        """score_global of every frame of video `key` (NaN where unscored)."""
        values = np.full(num_frames, np.nan)
        if key in self.curves:
            frames, scores = self.curves[key]
            values[frames] = scores
        return values

    @property
    def false_alarm_rate(self) -> float | None:
        return self.false_alarms / self.normal_frames if self.normal_frames else None


def scan_scores(outputs: Outputs, curve_keys: set[str], alarms: list[Alarm]) -> ScoreScan:
    """Reads the frame files of the card videos and of the listed alarms (not the archive) and takes the labelled
    normal frames' counts from the rebuild."""
    scan = ScoreScan(normal_frames=outputs.normal_frames, false_alarms=outputs.false_alarms)
    peak_frames: dict[str, list[int]] = {}
    for alarm in alarms:
        peak_frames.setdefault(alarm.key, []).append(alarm.peak_frame)
    for key in sorted(curve_keys | set(peak_frames)):
        path = outputs.frame_files.get(key)
        if path is None or not path.is_file():
            continue
        columns = columns_of(path, ["frame", "score_global"])
        frames, scores = columns["frame"], columns["score_global"]
        if key in curve_keys:
            scan.curves[key] = frames, scores
        at = dict(zip(frames.tolist(), scores.tolist(), strict=True))
        scan.peaks.update({(key, frame): at[frame] for frame in peak_frames.get(key, ()) if frame in at})
    return scan


def preview_requests(cards: list[Alarm], summaries: Iterable[Mapping[str, Any]], listing: Listing,
                     default_fps: float | None) -> list[VideoRequest]:
    """One request per video with cards, its alarms in card order; a video gone from the listing gets unit None."""
    units = {u.key: u for u in listing.units}
    by_key = {s["key"]: s for s in summaries}
    spans: dict[str, list[tuple[int, int]]] = {}
    for alarm in cards:
        spans.setdefault(alarm.key, []).append((alarm.start_frame, alarm.end_frame))
    return [VideoRequest(units.get(key), key, by_key[key]["num_frames"], by_key[key]["fps"] or default_fps,
                         tuple(alarms)) for key, alarms in spans.items()]


def _in_order(cards: list[Alarm], requests: list[VideoRequest],
              previews: Mapping[str, list[Preview]]) -> list[Preview]:
    """The preview of each card, in card order (requests group a video's alarms, in card order)."""
    found = {}
    for request in requests:
        made = previews.get(request.key) or []
        for i, span in enumerate(request.alarms):
            found[request.key, span] = made[i] if i < len(made) else Preview.unavailable("no preview was made")
    return [found[a.key, (a.start_frame, a.end_frame)] for a in cards]


def _facts(config: ScoreConfig, source: ModelSource, listing: Listing, limit: Threshold, outputs: Outputs,
           report: Mapping[str, Any], videos: list[Mapping[str, Any]], alarms: list[Alarm], since: str | None,
           history: list[dict[str, Any]], scan: ScoreScan) -> list[tuple[str, str]]:
    if since:
        scope = f"the {len(videos)} videos scored since the previous page ({since})"
    else:
        scope = f"the {len(videos)} videos scored {'into this folder' if config.incremental else 'by this run'}"
    flagged = sum(a.num_frames for a in alarms)
    facts = [
        ("model", f"{_model_name(source)} ({source.uri})"),
        ("data", f"{listing.dataset}: {report['data']}"),
        ("videos", f"{report['listed']} listed: {report['scored']} scored by this run, "
                   f"{report['skipped_already_scored']} skipped as already scored, {len(report['too_short'])} too "
                   f"short for one clip, {len(report['failed'])} failed"),
        ("frames", f"{report['frames_scored']} scored by this run in {report['seconds']:.0f} s"),
        ("alarms", f"{len(alarms)} ({flagged} frames) in {scope}"),
        ("threshold", _threshold_text(limit)),
    ]
    if config.incremental:
        previous = history[-1] if history else None
        facts.append(("previous page", f"{previous['alarms']} alarms in {previous['videos']} videos "
                                       f"({previous['finished']}, {previous['model']})" if previous else
                      "none in this folder yet"))
    if outputs.metrics is not None:
        m = outputs.metrics
        facts.append(("AUC", f"{m['auc_micro']:.4f} frame-level micro (the paper's), {m['auc_macro']:.4f} macro, "
                             f"over {m['videos']} labelled videos"))
    if outputs.metrics is not None and scan.false_alarm_rate is not None:
        facts.append(("false-alarm rate", f"{scan.false_alarm_rate:.2%} of {scan.normal_frames} labelled normal "
                                          "frames flagged"))
    elif outputs.metrics is None:
        facts.append(("labels", outputs.metrics_note))
    if report.get("alarms") is not None:
        facts.append(("alarm share", alarm_share_text(report["alarms"])))
    night = (report.get("new_alarms") or {}).get("share")
    if config.incremental and night is not None and night["frames_scored"]:
        facts.append(("alarm share, this run", alarm_share_text(night)))
    return facts


def _skipped(report: Mapping[str, Any], source: ModelSource, settings: ScoringSettings) -> list[tuple[str, str]]:
    """(which videos, why) of every video this run listed but did not score."""
    skipped = []
    if report["skipped_already_scored"]:
        skipped.append((f"{report['skipped_already_scored']} videos",
                        f"already scored into this folder by {source.key} (--incremental)"))
    for item in report.get("deferred", [])[:FAILED_ROWS]:
        skipped.append((f"{item['video_id']} ({item['file']})", item["reason"]))
    if report["too_short"]:
        shown = ", ".join(report["too_short"][:FAILED_ROWS])
        more = f" and {len(report['too_short']) - FAILED_ROWS} more" if len(report["too_short"]) > FAILED_ROWS else ""
        skipped.append((shown + more, f"fewer frames than one clip of {settings.clip_len}"))
    return skipped


def _threshold_text(limit: Threshold) -> str:
    if limit.error is None:
        return limit.source
    return f"error > {limit.error:.5g}, the {limit.level} quantile of the error on normal clips ({limit.source})"


def _score_note(limit: Threshold) -> str:
    if limit.error is not None:
        return "score: 0 at the median error of normal clips, 1 at the threshold (dashed on the curves)"
    return "score: the error scaled to 0..1 over this run (no calibrated threshold)"


def _model_name(source: ModelSource) -> str:
    name, version = source.tags.get("memae.model_name"), source.tags.get("memae.model_version")
    return f"{name} version {version}" if name and version else source.key


def _page_videos(summaries: Iterable[Mapping[str, Any]], listing: Listing, section: LedgerSection, incremental: bool,
                 since: str | None) -> list[Mapping[str, Any]]:
    """The scored videos whose alarms the page shows: with --incremental those scored since the previous page (all
    when there is none), otherwise those listed by this run."""
    if incremental:
        def new(key: str) -> bool:
            entry = section.videos.get(key)
            return since is None or (entry is not None and entry.scored_at > since)
    else:
        listed = {u.key for u in listing.units}

        def new(key: str) -> bool:
            return key in listed
    return [s for s in summaries if s["scored"] and new(s["key"])]


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)
