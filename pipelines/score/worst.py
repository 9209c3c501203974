"""The most anomalous frames, shown: read again from their videos, each with the error map of the clip centred on it.

Only frame indices and errors are kept while scoring (an archive is too large to hold its frames); the few worst
frames are decoded again at the end, one pass over each of their videos, in Ray tasks (pipelines/score/isolated.py):
a video that can no longer be read is left out of the picture, and said so.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from memae.scoring import error_maps
from memae.transforms import clips_to_tensor
from pipelines.registry.source import ModelSource, ScoringSettings
from pipelines.score.actors import driver_model
from pipelines.score.config import ScoreConfig
from pipelines.score.data import Listing, clips_at
from pipelines.score.isolated import read_each
from pipelines.score.outputs import Outputs


def worst_images(outputs: Outputs, listing: Listing, source: ModelSource, settings: ScoringSettings,
                 config: ScoreConfig, echo: Callable[[str], None]) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """(entry of `outputs.worst`, frame (H, W, C) uint8, error map (H, W)) of each worst frame still readable."""
    if not outputs.worst:
        return []
    units = {u.key: u for u in listing.units}
    num_frames = {s["key"]: s["num_frames"] for s in outputs.summaries}
    wanted = [w for w in outputs.worst if w["key"] in units]  # a video scored on an earlier night may be gone
    if not wanted:
        return []
    half = settings.clip_len // 2
    starts = {(w["key"], w["frame"]): min(max(0, w["frame"] - half), num_frames[w["key"]] - settings.clip_len)
              for w in wanted}
    requests = [(units[key], {s for (k, _), s in starts.items() if k == key})
                for key in dict.fromkeys(w["key"] for w in wanted)]  # one pass over each video
    clips: dict[str, dict[int, np.ndarray]] = {}
    for unit, found, failure in read_each(requests, clips_at, settings, config):
        if failure is not None:
            echo(f"worst frames: {unit.key} left out, it cannot be read again: {failure.file}: {failure.reason}")
        clips[unit.key] = found or {}
    model, device = driver_model(source)
    shown = []
    for worst in wanted:
        start = starts[worst["key"], worst["frame"]]
        clip = clips[worst["key"]].get(start)
        if clip is None:
            continue
        x = clips_to_tensor(clip[None]).to(device)
        with torch.inference_mode():
            recon = model(x)["output"]
        offset = worst["frame"] - start
        shown.append((worst, clip[offset], error_maps(x, recon)[0, offset].cpu().numpy()))
    return shown
