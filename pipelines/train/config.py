"""The training job's configuration: the official recipe by default, every value a flag or a YAML key."""

from __future__ import annotations

from dataclasses import dataclass, replace

from memae.losses import DEFAULT_ALPHA
from memae.memory import shrink_for
from memae.models import entropy_weight
from memae.presets import PRESETS, ModelSpec, Preset, get_preset
from memae.scoring import DEFAULT_FRAME_RULE, ERROR_RULES, FRAME_RULES
from pipelines.common.config import option

TRAINABLE_MODELS = ["memae", "memae-nonspar", "ae", "memae-mnad"]


@dataclass
class TrainConfig:
    shards: str | None = option(None, "clip shards written by jobs/ingest.py (their train split is used)")
    val_shards: str | None = option(None, "labelled shards for validation (their test split): videos other than "
                                    "the ones you report; default: none (held-out normal videos choose the epoch)")
    oracle: bool = option(False, "let --val-shards be the corpus trained on, i.e. choose the epoch on the test videos "
                          "that are then reported: an upper bound, never a result; its metrics are named oracle_*")
    preset: str = option("cpu-small", "named preset: clip length, frame size, width, memory", choices=sorted(PRESETS))
    model: str = option("memae", "memae, an ablation of the paper (memae-nonspar, ae), or memae-mnad (the decoder "
                        "also sees the query, as in MNAD)", choices=TRAINABLE_MODELS)
    mem_dim: int | None = option(None, "memory slots (default: the preset's)")
    shrink_thres: float | None = option(None, "hard-shrinkage lambda (default: the preset's; 0 for memae-nonspar; "
                                        "0.0025 is the official code's)")
    shrink_per_slot: float | None = option(None, "lambda as k/N for N memory slots (the paper advises 1..3); "
                                           "instead of --shrink-thres")
    warmup_epochs: float = option(0.0, "ramp lambda and alpha up from 0 over this many epochs, so that addressing "
                                  "sharpens before shrinkage zeroes weak weights (0: the official recipe)")
    memory_init: str = option("uniform", "memory initialisation: uniform (official) or kmeans (centroids of the "
                              "untrained encoder's features on the first batches)", choices=["uniform", "kmeans"])
    width: float | None = option(None, "channel multiplier (default: the preset's)")
    addressing: str = option(
        "dot", "memory addressing: dot (official code) or cosine (paper)", choices=["dot", "cosine"]
    )
    temperature: float = option(1.0, "softmax temperature for cosine addressing")
    alpha: float = option(DEFAULT_ALPHA, "entropy loss weight (memae-nonspar trains without it, as in the paper)")
    lr: float = option(1e-4, "Adam learning rate")
    batch_size: int | None = option(None, "clips per step per worker (default: the preset's; official 14)")
    clip_stride: int = option(1, "frames between the starts of consecutive training clips")
    epochs: int = option(10, "epochs to train (a resumed run continues up to this count)")
    max_steps: int | None = option(None, "stop after this many optimizer steps in all")
    max_minutes: float | None = option(None, "stop after this wall-clock budget (checkpointing what was done)")
    seed: int = option(0, "seed for initialisation and shuffling (runs on CPU are deterministic given it)")
    num_workers: int = option(1, "data-parallel workers (DDP); 0 runs the loop in the driver process")
    use_gpu: bool | None = option(None, "one GPU per worker (default: when the cluster has GPUs)")
    cpus_per_worker: float | None = option(None, "CPUs per worker (default: leave one CPU for Ray Data)")
    torch_threads: int | None = option(None, "torch threads per worker (default: from the worker's CPUs)")
    bf16: bool = option(True, "bf16 autocast on GPU workers")
    channels_last: bool = option(False, "channels_last_3d memory format for the model and batches on GPU workers "
                                 "(cuDNN's NDHWC 3D convolutions; unmeasured on MemAE, whose first layer has one "
                                 "channel, so off until a GPU benchmark says otherwise; no effect on CPU)")
    val_every: int = option(1, "validate every N epochs (with --val-shards or --holdout-fraction)")
    holdout_fraction: float = option(0.25, "without --val-shards: fraction of training videos held out (at least one "
                                     "when there are two or more): they choose the epoch (--select-by) and calibrate "
                                     "the alarm threshold on footage the model has not fitted; 0 trains on all")
    select_by: str = option("holdout_error", "with held-out videos, the best epoch is the one with the lowest "
                            "holdout_error (their mean clip error) or the highest pseudo_auc (their clips against "
                            "sped-up and patched copies); both are logged every epoch, neither needs a label",
                            choices=["holdout_error", "pseudo_auc"])
    error_rule: str = option("l1", "clip error for validation", choices=list(ERROR_RULES))
    frame_rule: str = option(DEFAULT_FRAME_RULE, "clip-to-frame rule for validation, stored with the registered model "
                             "for scoring (centre: the paper's)", choices=list(FRAME_RULES))
    storage_path: str = option("runs", "where checkpoints go: a folder, or any URI Ray Train accepts")
    name: str | None = option(None, "run name (default: generated); an existing name with --resume continues it")
    resume: bool = option(False, "continue the run called --name from its last checkpoint")
    max_failures: int = option(1, "worker failures to recover from (restarting from the last checkpoint)")
    register: str | None = option(None, "register the model under this name in the MLflow model registry")
    alias: str | None = option(None, "move this alias (e.g. champion) to the registered version")
    tracking_uri: str | None = option(None, "MLflow tracking URI (default: MLFLOW_TRACKING_URI, else ./mlflow.db)")
    experiment: str = option("memae-train", "MLflow experiment")
    mlflow_parent_run: str | None = option(None, "nest this run under that MLflow run id (set by tune sweeps)")
    verbose: bool = option(False, "show Ray's and MLflow's own messages on the console (they go to log files)")

    def preset_spec(self) -> Preset:
        return get_preset(self.preset)

    def model_spec(self, in_channels: int) -> ModelSpec:
        """The preset's model with this run's overrides; the ablations fix what the paper fixes."""
        base = self.preset_spec().model
        mem_dim = self.mem_dim if self.mem_dim is not None else base.mem_dim
        if self.shrink_per_slot is not None and self.shrink_thres is not None:
            raise ValueError("give --shrink-thres or --shrink-per-slot, not both")
        shrink = self.shrink_thres if self.shrink_thres is not None else base.shrink_thres
        return replace(
            base,
            arch=self.model,
            in_channels=in_channels,
            mem_dim=mem_dim,
            shrink_thres=shrink_for(mem_dim, self.shrink_per_slot) if self.shrink_per_slot is not None else shrink,
            width=self.width if self.width is not None else base.width,
            addressing=self.addressing,
            temperature=self.temperature,
        )

    @property
    def effective_alpha(self) -> float:
        """The entropy weight this model trains with (0 for the ablations; see memae.models.VARIANTS)."""
        return entropy_weight(self.model, self.alpha)

    @property
    def resolved_batch_size(self) -> int:
        return self.batch_size or self.preset_spec().batch_size
