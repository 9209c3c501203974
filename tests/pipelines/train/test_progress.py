"""The driver prints each epoch once, from the metrics rank 0 logs to the run's MLflow store."""

from mlflow.tracking import MlflowClient

from pipelines.train.progress import EpochLines


def _log_epoch(client: MlflowClient, run_id: str, epoch: int) -> None:
    for key, value in {"epoch": epoch, "train_loss": 0.1 / epoch, "train_clips_per_s": 10.0 * epoch}.items():
        client.log_metric(run_id, key, value, step=epoch)


def test_each_epoch_is_printed_once_in_order_and_the_last_at_the_end(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run_id = client.create_run(client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())).info.run_id
    _log_epoch(client, run_id, 1)  # logged before: a resumed run's earlier epoch is not printed again
    lines: list[str] = []
    with EpochLines(uri, run_id, epochs=3, echo=lines.append, every_s=3600) as follower:
        _log_epoch(client, run_id, 3)
        _log_epoch(client, run_id, 2)
        follower.poll()
        follower.poll()
        assert [line.split(" | ")[0] for line in lines] == ["epoch 2/3", "epoch 3/3"]
        assert "loss 0.03333" in lines[1]
        _log_epoch(client, run_id, 4)
    assert [line.split(" | ")[0] for line in lines] == ["epoch 2/3", "epoch 3/3", "epoch 4/3"]
