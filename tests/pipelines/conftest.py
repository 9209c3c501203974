"""One local Ray for every test that needs it, and tiny ingested corpora shared by the read-only tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from experiments.synthetic import SynthConfig, WrittenVideo, write_corpus
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.run import IngestResult, ingest

TINY = SynthConfig(height=48, width=64, frames=24, train_videos=2, test_videos=2, seed=5)


@pytest.fixture(scope="session")
def ray_session():
    """The session's single Ray: 2 CPUs and a 300 MB object store, so it fits beside the other test processes.
    With the dashboard: Ray Train V2 releases a finished run's resources through its state API."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, object_store_memory=300 * 1024**2, include_dashboard=True, dashboard_host="127.0.0.1",
                 address="local")
    yield ray
    if started:
        ray.shutdown()


@dataclass
class Ingested:
    root: Path
    out: Path
    written: list[WrittenVideo]
    result: IngestResult
    lines: list[str]
    config: IngestConfig


def run_ingest(root: Path, out: Path, **kwargs) -> Ingested:
    lines: list[str] = []
    cfg = IngestConfig(root=root, out=out, **kwargs)
    return Ingested(root, out, [], ingest(cfg, echo=lines.append), lines, cfg)


@pytest.fixture(scope="session")
def ingested_ped2(tmp_path_factory, ray_session) -> Ingested:
    """UCSD Ped2 layout, 2+2 videos of 24 frames, stored at 32x48 gray."""
    root = tmp_path_factory.mktemp("ped2")
    written = write_corpus("ucsd-ped2", root, TINY)
    run = run_ingest(root, tmp_path_factory.mktemp("ped2-shards"), dataset="auto", size=(32, 48))
    run.written = written
    return run


@pytest.fixture(scope="session")
def ingested_avenue(tmp_path_factory, ray_session) -> Ingested:
    """Avenue layout (video files, ids shared by train and test), stored at its own size in RGB."""
    root = tmp_path_factory.mktemp("avenue")
    written = write_corpus("avenue", root, TINY)
    run = run_ingest(root, tmp_path_factory.mktemp("avenue-shards"), dataset="avenue", size=None, color="rgb")
    run.written = written
    return run


@pytest.fixture(scope="session")
def tiny_train_shards(tmp_path_factory, ray_session) -> Path:
    """A tiny Ped2-layout corpus stored at 32x32 grey: fits the cpu-tiny preset (8-frame clips) for training."""
    root = tmp_path_factory.mktemp("train-corpus")
    write_corpus("ucsd-ped2", root, SynthConfig(height=48, width=64, frames=24, train_videos=2, test_videos=2, seed=7))
    out = tmp_path_factory.mktemp("train-shards")
    assert ingest(IngestConfig(root=root, out=out, dataset="ucsd-ped2", size=(32, 32)), echo=lambda _: None).ok
    return out
