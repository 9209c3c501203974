"""The review page as HTML: one self-contained file (inline CSS, plain JavaScript, images as data URIs).

Nothing is fetched when the page opens, so it works from a file, from an e-mail attachment and inside the MLflow
UI's artifact viewer (which shows an HTML artifact on its own, without its neighbours). What goes on the page is
decided in pipelines/score/review.py; this module only draws it.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass

import numpy as np

from pipelines.score.previews import Preview

CURVE_SIZE = (360, 72)  # (width, height) of a card's score curve, in CSS pixels


@dataclass(frozen=True)
class Alarm:
    """One alarm segment: frames start_frame..end_frame (inclusive) of a video; times None without a frame rate."""

    key: str  # "split/video_id"
    video_id: str
    camera: str
    start_frame: int
    end_frame: int
    start_s: float | None
    end_s: float | None
    peak_frame: int
    peak_error: float
    peak_score: float | None = None  # score_global at the peak: 1 is the threshold when it is calibrated

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame + 1

    @property
    def duration_s(self) -> float | None:
        return None if self.start_s is None or self.end_s is None else self.end_s - self.start_s


@dataclass(frozen=True)
class Card:
    """An alarm shown in full: its animation and its video's score curve (score_global per frame, NaN unscored)."""

    alarm: Alarm
    preview: Preview
    curve: np.ndarray


@dataclass
class PageContent:
    """Everything on the page, in order."""

    title: str
    facts: list[tuple[str, str]]  # the summary, as (label, text)
    failed: list[dict]  # video_id, file, reason
    skipped: list[tuple[str, str]]  # (which videos, why)
    cards: list[Card]
    rest: list[Alarm]  # alarms without a card, listed in a table
    unlisted: int  # alarms on neither (their count only; segments.parquet holds them all)
    score_note: str  # what the score means
    threshold_score: float | None  # where the threshold sits on the score scale (None: no calibrated threshold)
    earlier: tuple[tuple[str, str], ...] = ()  # earlier nightly pages, newest first: (file name, what it held)


def render_page(page: PageContent, pages_href: str = "") -> str:
    """The whole page as one HTML string; links to earlier pages are `pages_href` + their file names."""
    cameras = sorted({c.alarm.camera for c in page.cards} | {a.camera for a in page.rest})
    options = "".join(f"<option>{_e(camera)}</option>" for camera in cameras)
    facts = "".join(f"<dt>{_e(label)}</dt><dd>{_e(text)}</dd>" for label, text in page.facts)
    cards = "".join(_card(i + 1, card, page.threshold_score) for i, card in enumerate(page.cards))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(page.title)}</title><style>{_CSS}</style></head>
<body>
<header><h1>{_e(page.title)}</h1><dl class="facts">{facts}</dl>{_earlier(page, pages_href)}{_problems(page)}</header>
<form id="filters" onsubmit="return false">
<label>camera <select id="camera"><option value="">all cameras</option>{options}</select></label>
<label>minimum peak score <input id="min-score" type="number" step="0.1" placeholder="any"></label>
<output id="shown"></output><span class="note">{_e(page.score_note)}</span>
</form>
<main id="cards">{cards or '<p class="empty">No alarms.</p>'}</main>
{_rest_table(page, len(page.cards))}
<script>{_JS}</script>
</body></html>
"""


def _card(rank: int, card: Card, threshold: float | None) -> str:
    a, preview = card.alarm, card.preview
    if preview.image is not None:
        width, height = preview.size
        speed = f" (sped up {preview.speedup}x)" if preview.speedup > 1 else ""
        media = (f'<img class="preview" width="{width}" height="{height}" alt="alarm {rank}: frames and error map"'
                 f' src="data:image/webp;base64,{base64.b64encode(preview.image).decode()}">'
                 f'<figcaption>frames (red border: flagged) | error map{_e(speed)}</figcaption>')
    else:
        media = f'<p class="unavailable">preview unavailable: {_e(preview.reason or "unknown reason")}</p>'
    return (f'<article class="card" data-camera="{_e(a.camera)}" data-score="{_number(a.peak_score)}">'
            f'<h2><span class="rank">#{rank}</span> {_e(a.camera)} / {_e(a.video_id.removeprefix(a.camera + "/"))}'
            f'<span class="score">peak {_fmt(a.peak_score)}</span></h2>'
            f'<figure>{media}</figure>{curve_svg(card.curve, a, threshold)}'
            f'<dl class="times"><dt>start</dt><dd>{_time(a.start_s)} (frame {a.start_frame})</dd>'
            f'<dt>end</dt><dd>{_time(a.end_s)} (frame {a.end_frame})</dd>'
            f'<dt>duration</dt><dd>{_duration(a)}</dd>'
            f'<dt>peak</dt><dd>frame {a.peak_frame}, error {a.peak_error:.4g}</dd></dl></article>')


def curve_svg(values: np.ndarray, alarm: Alarm, threshold: float | None) -> str:
    """The video's score per frame as an inline SVG line (at most one point per pixel, keeping peaks), the alarm
    shaded, its peak dotted and the threshold dashed."""
    width, height = CURVE_SIZE
    values = np.asarray(values, dtype=np.float64)
    n = max(len(values), 1)
    edges = np.linspace(0, len(values), min(len(values), width) + 1).astype(int)
    points = [(0.5 * (a + b) / n * width, _nanmax(values[a:b])) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    finite = [v for _, v in points if not math.isnan(v)] + ([threshold] if threshold is not None else [])
    low, high = min([0.0, *finite]), max([1e-9, *finite]) * 1.05

    def y(v: float) -> float:
        return height - 3 - (v - low) / (high - low) * (height - 6)

    path, pen_up = [], True
    for x, v in points:
        if math.isnan(v):
            pen_up = True
            continue
        path.append(f"{'M' if pen_up else 'L'}{x:.1f} {y(v):.1f}")
        pen_up = False
    x0 = alarm.start_frame / n * width
    x1 = max((alarm.end_frame + 1) / n * width, x0 + 1.5)
    parts = [f'<rect class="alarm" x="{x0:.1f}" y="0" width="{x1 - x0:.1f}" height="{height}"/>',
             f'<path class="line" d="{" ".join(path)}"/>']
    if threshold is not None:
        parts.append(f'<line class="threshold" x1="0" x2="{width}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}"/>')
    if alarm.peak_score is not None and math.isfinite(alarm.peak_score):
        px = (alarm.peak_frame + 0.5) / n * width
        parts.append(f'<circle class="peak" cx="{px:.1f}" cy="{y(alarm.peak_score):.1f}" r="2.5"/>')
    label = f"score of {alarm.video_id} over its {len(values)} frames; the alarm shaded"
    return (f'<svg class="curve" viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}">'
            f'<title>{_e(label)}</title>{"".join(parts)}</svg>')


def without_earlier_links(page_html: str) -> str:
    """A rendered page without its links to earlier pages: the copy for a place that does not hold them (MLflow)."""
    return _EARLIER_LINKS.sub("", page_html)


def _earlier(page: PageContent, pages_href: str) -> str:
    if not page.earlier:
        return ""
    links = " · ".join(f'<a href="{_e(pages_href + name)}">{_e(text)}</a>' for name, text in page.earlier)
    return f'<p class="earlier">earlier pages: {links}</p>'


_EARLIER_LINKS = re.compile(r'<p class="earlier">.*?</p>', re.DOTALL)  # what `_earlier` writes


def _problems(page: PageContent) -> str:
    parts = []
    if page.failed:
        rows = "".join(f"<tr><td>{_e(f.get('video_id'))}</td><td>{_e(f.get('file'))}</td><td>{_e(f.get('reason'))}</td>"
                       "</tr>" for f in page.failed)
        parts.append(f'<details open><summary>{len(page.failed)} failed</summary><table class="failed"><tr>'
                     f"<th>video</th><th>file</th><th>reason</th></tr>{rows}</table></details>")
    if page.skipped:
        items = "".join(f"<li>{_e(which)}: {_e(why)}</li>" for which, why in page.skipped)
        parts.append(f"<details><summary>skipped</summary><ul>{items}</ul></details>")
    return "".join(parts)


def _rest_table(page: PageContent, first_rank: int) -> str:
    if not page.rest:
        return ""
    rows = "".join(
        f'<tr data-camera="{_e(a.camera)}" data-score="{_number(a.peak_score)}"><td>{first_rank + i + 1}</td>'
        f"<td>{_e(a.camera)}</td><td>{_e(a.video_id)}</td><td>{_time(a.start_s)}</td><td>{_time(a.end_s)}</td>"
        f"<td>{_duration(a)}</td><td>{a.start_frame}-{a.end_frame}</td><td>{_fmt(a.peak_score)}</td></tr>"
        for i, a in enumerate(page.rest))
    more = (f'<p class="note">and {page.unlisted} more alarms with lower peaks, not listed here: every alarm is in '
            "segments.parquet.</p>") if page.unlisted else ""
    return (f'<section id="rest"><h2>{len(page.rest)} more alarms, without preview</h2><table><tr><th>#</th>'
            "<th>camera</th><th>video</th><th>start</th><th>end</th><th>duration</th><th>frames</th>"
            f"<th>peak score</th></tr>{rows}</table>{more}</section>")


def _nanmax(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else math.nan


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _number(value: float | None) -> str:
    """A score for the filter's data attribute ("" when unknown: shown only without a minimum)."""
    return "" if value is None or not math.isfinite(value) else f"{value:.6g}"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3g}"


def _time(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    minutes, rest = divmod(seconds, 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{rest:04.1f}" if hours else f"{minutes}:{rest:04.1f}"


def _duration(alarm: Alarm) -> str:
    seconds = alarm.duration_s
    return f"{alarm.num_frames} frames" + (f", {seconds:.1f} s" if seconds is not None else "")


_CSS = """
:root{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;background:#f4f5f7}
body{margin:0 auto;max-width:1500px;padding:16px 20px}
h1{font-size:1.35rem;margin:0 0 8px}
h2{font-size:1rem;margin:0 0 6px;display:flex;gap:6px;align-items:baseline}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0 0 8px;font-size:.9rem}
.facts dt{color:#5b6270}.facts dd{margin:0}
details{margin:4px 0;font-size:.9rem}
#filters{position:sticky;top:0;z-index:1;background:#f4f5f7;padding:8px 0;display:flex;gap:18px;flex-wrap:wrap;
 align-items:center;border-bottom:1px solid #d6d9de;margin-bottom:12px}
#filters input{width:6em}.note{color:#5b6270;font-size:.85rem}
#cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:14px}
.card{background:#fff;border:1px solid #d6d9de;border-radius:8px;padding:10px 12px}
.rank{color:#5b6270}.score{margin-left:auto;font-weight:600;color:#b3261e}
figure{margin:0}
.preview{width:100%;height:auto;image-rendering:pixelated;background:#000;display:block;border-radius:4px}
figcaption{font-size:.75rem;color:#5b6270;margin:2px 0 4px}
.unavailable{background:#fdecea;color:#8a1c14;padding:18px 10px;border-radius:4px;font-size:.9rem;margin:0 0 4px}
.curve{width:100%;height:auto;display:block;margin:4px 0;background:#fafbfc;border:1px solid #eceef1}
.curve .line{fill:none;stroke:#2f5fb3;stroke-width:1.2}.curve .alarm{fill:rgba(214,40,40,.22)}
.curve .threshold{stroke:#333;stroke-dasharray:4 3;stroke-width:.8}.curve .peak{fill:#b3261e}
.times{display:grid;grid-template-columns:max-content 1fr;gap:0 10px;margin:4px 0 0;font-size:.85rem}
.times dt{color:#5b6270}.times dd{margin:0}
table{border-collapse:collapse;font-size:.85rem;background:#fff;margin:6px 0}
th,td{border:1px solid #d6d9de;padding:3px 8px;text-align:left}
#rest{margin-top:20px}.empty{color:#5b6270}.earlier{font-size:.85rem;margin:0 0 8px}
[hidden]{display:none!important}
"""

_JS = """
(function () {
  const camera = document.getElementById("camera"), minScore = document.getElementById("min-score");
  const shown = document.getElementById("shown");
  function apply() {
    const wanted = camera.value, least = parseFloat(minScore.value);
    let visible = 0, total = 0;
    for (const item of document.querySelectorAll("[data-camera]")) {
      const score = parseFloat(item.dataset.score);
      const keep = (!wanted || item.dataset.camera === wanted) && (isNaN(least) || score >= least);
      item.hidden = !keep;
      total += 1;
      visible += keep ? 1 : 0;
    }
    shown.textContent = visible + " of " + total + " alarms shown";
  }
  camera.addEventListener("change", apply);
  minScore.addEventListener("input", apply);
  apply();
})();
"""
