"""The training driver's small decisions, without starting Ray Train."""

import numpy as np
import pytest

from pipelines.train.config import TrainConfig
from pipelines.train.run import split_holdout, training_objective
from pipelines.train.worker import checkpoint_score, epoch_line, validation_cut


def test_holdout_split_is_deterministic_disjoint_and_never_empty():
    ids = [f"Train{i:03d}" for i in range(10)]
    held, kept = split_holdout(ids, 0.2, seed=1)
    assert split_holdout(ids, 0.2, seed=1) == (held, kept)
    assert len(held) == 2 and set(held).isdisjoint(kept) and sorted(held + kept) == ids
    assert split_holdout(ids, 0.2, seed=2)[0] != held
    assert len(split_holdout(ids[:2], 0.01, seed=0)[0]) == 1 and len(split_holdout(ids[:2], 0.99, seed=0)[1]) == 1
    with pytest.raises(ValueError, match="at least 2"):
        split_holdout(ids[:1], 0.5, seed=0)


def test_objective_and_scores_rank_validated_epochs_first():
    assert training_objective(TrainConfig(val_shards="x", holdout_fraction=0.3)) == "val_auc_micro"
    assert training_objective(TrainConfig(val_shards="x", oracle=True)) == "oracle_val_auc_micro"
    assert training_objective(TrainConfig()) == "holdout_error"
    assert training_objective(TrainConfig(select_by="pseudo_auc")) == "pseudo_auc"
    assert training_objective(TrainConfig(), train_videos=1) == "train_loss"  # nothing to hold out
    assert training_objective(TrainConfig(holdout_fraction=0.0)) == "train_loss"
    assert checkpoint_score({"pseudo_auc": 0.8}, "pseudo_auc") > checkpoint_score({"pseudo_auc": 0.6}, "pseudo_auc")
    assert checkpoint_score({"oracle_val_auc_micro": 0.7}, "oracle_val_auc_micro") == 0.7
    assert checkpoint_score({"val_auc_micro": 0.7, "train_loss": 1}, "val_auc_micro") == 0.7
    assert checkpoint_score({"train_loss": 1}, "val_auc_micro") < 0
    assert checkpoint_score({"holdout_error": 0.2}, "holdout_error") > checkpoint_score({"holdout_error": 0.3},
                                                                                        "holdout_error")
    assert checkpoint_score({"train_loss": 0.1}, "holdout_error") < -1e30
    assert checkpoint_score({"train_loss": 0.1}, "train_loss") == pytest.approx(-0.1)
    assert np.isfinite(checkpoint_score({"train_loss": 0.1}, "holdout_error"))


def test_lambda_can_be_given_per_slot_but_not_both_ways():
    assert TrainConfig(mem_dim=500, shrink_per_slot=2.0).model_spec(in_channels=1).shrink_thres == pytest.approx(0.004)
    assert TrainConfig(preset="paper").model_spec(in_channels=1).shrink_thres == pytest.approx(2 / 2000)
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(shrink_thres=0.01, shrink_per_slot=2.0).model_spec(in_channels=1)


def test_nonspar_ablation_drops_shrinkage_and_entropy_as_the_paper_defines_it():
    config = TrainConfig(model="memae-nonspar", alpha=0.01, shrink_thres=0.01)
    assert config.effective_alpha == 0.0 and config.model_spec(in_channels=1).shrink_thres == 0.0
    memae = TrainConfig(model="memae", alpha=0.01)
    assert memae.effective_alpha == 0.01 and memae.model_spec(in_channels=1).shrink_thres == 0.0025


def test_epoch_line_shows_loss_memory_and_validation():
    line = epoch_line({"epoch": 3, "train_loss": 0.01, "train_clips_per_s": 12.0, "mem_active_query_fraction": 0.5,
                       "mem_mean_active_slots_when_active": 4.0, "mem_distinct_slots": 80, "val_auc_micro": 0.9,
                       "val_auc_macro": 0.8}, epochs=10)
    assert line.startswith("epoch 3/10")
    assert "50% queries dead" in line and "val AUC 0.900" in line and "loss 0.01000" in line
    oracle = epoch_line({"epoch": 1, "train_loss": 0.01, "train_clips_per_s": 1.0, "oracle_val_auc_micro": 0.9,
                         "oracle_val_auc_macro": 0.8, "pseudo_auc": 0.75}, epochs=2)
    assert "ORACLE val AUC (test labels) 0.900" in oracle and "pseudo-anomaly AUC 0.750" in oracle


def test_validation_cuts_every_labelled_clip_and_held_out_windows_one_clip_apart():
    assert validation_cut("val_auc_micro", 16) == validation_cut("oracle_val_auc_micro", 16) == (16, 1)
    assert validation_cut("holdout_error", 16) == validation_cut("pseudo_auc", 16) == (32, 16)
