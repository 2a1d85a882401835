"""MLflowLogger and OptunaPruning with the real packages and real stores: MLflow SQLite
databases and a live ``mlflow server``, read back with MlflowClient; Optuna studies in
SQLite; kill -9 and a rerun; two processes under torchrun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

from torchcallbacks import BackupAndRestore, Callback, JSONLogger, ModelCheckpoint, Trainer
from torchcallbacks.integrations import MLflowLogger, OptunaPruning

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS / "ddp_scripts"))
import launch  # noqa: E402


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite database with its tables: making them takes seconds, a copy none."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("mlflow-empty")
    SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", str(folder / "artifacts"))
    return folder / "mlflow.db"


@pytest.fixture
def store(tmp_path, empty_store, monkeypatch) -> str:
    """The tracking URI of a new SQLite store; experiments made in it keep their artifacts
    in ``tmp_path/mlruns`` (MLflow's default, under the working directory)."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _mlflow_globals(monkeypatch):
    """MLflow's process-wide tracking URI and experiment unset, before and after each test
    (the documentation's examples set them, and set_experiment exports them)."""

    def reset():
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)
        mlflow.tracking.fluent._active_experiment_id = None

    reset()
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    yield
    reset()


def small_fit(seed: int = 0, lr: float = 0.05) -> tuple[Trainer, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    trainer = Trainer(model, optimizer, "mse", ["mae"], "cpu")
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
    return trainer, x, x @ torch.tensor([[1.0], [-2.0], [0.5]])


def steps_and_values(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_fit_fills_an_mlflow_run_in_a_sqlite_store(store, tmp_path):
    trainer, x, y = small_fit()
    best = ModelCheckpoint(tmp_path / "best-{epoch}.pt", monitor="val_loss", save_best_only=True)
    last = ModelCheckpoint(tmp_path / "last.pt", save_weights_only=True)
    tracker = MLflowLogger(
        "fit", tracking_uri=store, run_name="first", tags={"team": "a"}, params={"seed": 0},
        log_every_n_steps=2, log_model={"pip_requirements": ["torch"]},
    )  # fmt: skip
    batches = JSONLogger(tmp_path / "log.jsonl", batch_level=True)
    history = trainer.fit(
        x, y, batch_size=8, epochs=3, validation_split=0.2, verbose=0,
        callbacks=[best, last, batches, tracker],
    )  # fmt: skip

    client = MlflowClient(store)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "first"
    assert client.get_experiment(run.info.experiment_id).name == "fit"
    assert run.data.tags["team"] == "a"
    params = run.data.params
    assert params["model"] == "Sequential" and params["loss"] == "mse" and params["seed"] == "0"
    assert (params["epochs"], params["batch_size"], params["steps_per_epoch"]) == ("3", "8", "4")
    assert params["optimizer"] == "SGD" and float(params["optimizer.lr"]) == 0.05
    assert float(params["optimizer.momentum"]) == 0.9 and params["world_size"] == "1"
    # the epoch logs at step=epoch; batch running means every 2 batches, step = batches seen
    keys = ["batch_loss", "batch_mae", "loss", "mae", "val_loss", "val_mae"]
    assert sorted(run.data.metrics) == keys
    for key, values in history.history.items():
        assert steps_and_values(client, run.info.run_id, key) == list(enumerate(values))
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    batch_records = [record for record in map(json.loads, lines) if "batch" in record]
    expected = [(n, r["loss"]) for n, r in enumerate(batch_records, 1) if n % 2 == 0]
    assert steps_and_values(client, run.info.run_id, "batch_loss") == expected
    # the best and the last checkpoint, byte for byte
    download = tmp_path / "download"
    best_name = Path(best.best_model_path).name
    for artifact, original in [
        (f"checkpoints/best/{best_name}", best.best_model_path),
        ("checkpoints/last/last.pt", tmp_path / "last.pt"),
    ]:
        copy = client.download_artifacts(run.info.run_id, artifact, str(download))
        assert Path(copy).read_bytes() == Path(original).read_bytes()
    # the model: a LoggedModel of the run's experiment that predicts as the module does
    [logged] = client.search_logged_models([run.info.experiment_id])
    assert logged.source_run_id == run.info.run_id and logged.name == "model"
    loaded = mlflow.pytorch.load_model(logged.artifact_location)
    torch.testing.assert_close(loaded(x), trainer.model(x))


def test_checkpoint_files_of_the_same_name_are_all_logged(store, tmp_path):
    trainer, x, y = small_fit()
    by_loss = ModelCheckpoint(tmp_path / "loss" / "best.pt", save_best_only=True)
    by_mae = ModelCheckpoint(tmp_path / "mae" / "best.pt", monitor="val_mae", save_best_only=True)
    tracker = MLflowLogger(tracking_uri=store, experiment_name="names")
    trainer.fit(
        x, y, epochs=2, validation_split=0.2, verbose=0, callbacks=[by_loss, by_mae, tracker]
    )
    client = MlflowClient(store)
    download = tmp_path / "download"
    for artifact, original in [
        ("checkpoints/best/best.pt", tmp_path / "loss" / "best.pt"),
        ("checkpoints/best/2/best.pt", tmp_path / "mae" / "best.pt"),
    ]:
        copy = client.download_artifacts(tracker.run_id, artifact, str(download / artifact))
        assert Path(copy).read_bytes() == original.read_bytes()


def test_the_active_run_or_a_given_run_is_joined_and_keeps_its_first_params(store, monkeypatch):
    mlflow.set_tracking_uri(store)
    client = MlflowClient(store)
    experiment_id = client.create_experiment("mine")
    trainer, x, y = small_fit()
    with mlflow.start_run(experiment_id=experiment_id) as active:
        tracker = MLflowLogger()
        trainer.fit(x, y, epochs=2, verbose=0, callbacks=[tracker])
        assert tracker.run_id == active.info.run_id
        assert client.get_run(active.info.run_id).info.status == "RUNNING"  # the block ends it
    run_id = active.info.run_id
    with pytest.warns(UserWarning, match=r"epochs='2' \(this fit: '3'\).*keeps its first"):
        trainer.fit(
            x, y, epochs=3, initial_epoch=2, verbose=0, callbacks=[MLflowLogger(run_id=run_id)]
        )
    assert [step for step, _ in steps_and_values(client, run_id, "loss")] == [0, 1, 2]
    assert client.get_run(run_id).data.params["epochs"] == "2"
    assert client.get_run(run_id).info.status == "FINISHED"  # a given run is left as it was

    # No run given, none active: the experiment MLflow's environment names, a run of its own.
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    tracker = MLflowLogger()
    trainer.fit(x, y, epochs=1, verbose=0, callbacks=[tracker])
    run = client.get_run(tracker.run_id)
    assert run.info.experiment_id == experiment_id and run.info.status == "FINISHED"
    assert len(client.search_runs([experiment_id])) == 2


def test_resume_from_a_full_checkpoint_continues_its_run(store, tmp_path):
    trainer, x, y = small_fit()
    tracker = MLflowLogger("resume", tracking_uri=store)
    every_epoch = ModelCheckpoint(tmp_path / "last.pt")  # full checkpoints
    trainer.fit(x, y, epochs=2, validation_split=0.2, verbose=0, callbacks=[tracker, every_epoch])
    first_run = tracker.run_id
    trainer, x, y = small_fit()
    tracker = MLflowLogger("resume", tracking_uri=store)
    with pytest.warns(UserWarning, match=r"epochs='2' \(this fit: '4'\)"):  # trained on
        history = trainer.fit(
            x, y, epochs=4, validation_split=0.2, verbose=0,
            resume_from=str(tmp_path / "last.pt"),
            callbacks=[tracker, ModelCheckpoint(tmp_path / "last.pt")],
        )  # fmt: skip
    assert tracker.run_id == first_run and history.epoch == [0, 1, 2, 3]  # History resumed too
    client = MlflowClient(store)
    for key, values in history.history.items():
        assert steps_and_values(client, first_run, key) == list(enumerate(values))
    assert client.get_run(first_run).info.status == "FINISHED"


def test_run_arguments_that_would_not_be_used_are_refused_or_warned(store):
    """run_id with a new run's name or experiment is refused; run_name beside an active
    run (which the fit joins) warns, and no other run is started."""
    for new_run in ({"run_name": "second"}, {"experiment_name": "other"}):
        with pytest.raises(ValueError, match="logs into that existing run.*a new run's"):
            MLflowLogger(run_id="0123456789abcdef0123456789abcdef", **new_run)
    trainer, x, y = small_fit()
    mlflow.set_tracking_uri(store)
    with mlflow.start_run(run_name="active") as active:
        with pytest.warns(UserWarning, match=f"is not used: .* active run {active.info.run_id}"):
            trainer.fit(x, y, epochs=1, verbose=0, callbacks=[MLflowLogger(run_name="unused")])
    client = MlflowClient(store)
    assert [run.info.run_name for run in client.search_runs(["0"])] == ["active"]
    assert [m.step for m in client.get_metric_history(active.info.run_id, "loss")] == [0]


def test_bad_arguments_are_refused_before_training(store):
    with pytest.raises(ValueError, match="log_every_n_steps must be a positive number"):
        MLflowLogger(log_every_n_steps=0)
    with pytest.raises(TypeError, match="log_model must be True, False or a dict"):
        MLflowLogger(log_model="yes")
    trainer, x, y = small_fit()
    missing = "0123456789abcdef0123456789abcdef"
    with pytest.raises(ValueError, match=f"run_id names MLflow run '{missing}'.*tracking_uri"):
        trainer.fit(x, y, epochs=1, verbose=0, callbacks=[MLflowLogger(run_id=missing)])
    assert trainer.global_step == 0
    with pytest.raises(ValueError, match="rank 0 needs the Optuna trial"):
        trainer.fit(x, y, epochs=1, verbose=0, callbacks=[OptunaPruning(None)])

    class TorchDistributedTrial:  # the name of Optuna's wrapper that runs collectives
        pass

    with pytest.raises(ValueError, match="TorchDistributedTrial runs collectives"):
        OptunaPruning(TorchDistributedTrial())
    assert trainer.global_step == 0


def test_without_their_packages_the_callbacks_name_the_extra(monkeypatch):
    # (tests/test_package.py checks that importing torchcallbacks.integrations imports neither)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ImportError, match=r'pip install "torchcallbacks\[mlflow\]"'):
        MLflowLogger()
    with pytest.raises(ImportError, match=r'pip install "torchcallbacks\[optuna\]"'):
        OptunaPruning(None)


@pytest.fixture(scope="module")
def server(empty_store, tmp_path_factory):
    """A real ``mlflow server`` on a free loopback port (about 20 s to answer /health)."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    shutil.copy(empty_store, folder / "mlflow.db")
    port = launch.free_port()
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", str(folder / "artifacts"),
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job workers
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed after the server
    process = subprocess.Popen(
        command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(folder / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def test_a_live_server_gets_the_run_and_a_rerun_after_a_crash_continues_it(server, tmp_path):
    """Over MLflow's REST API: params, metrics, a checkpoint uploaded through the server,
    and a fit that crashed after logging an epoch, rerun with its backup, that continues
    the same run without logging that epoch twice."""
    crashed = []

    class CrashOnce(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1 and not crashed:
                crashed.append(epoch)
                raise RuntimeError("crash after the backup and the log of epoch 1")

    def fit():
        trainer, x, y = small_fit()
        tracker = MLflowLogger("live", tracking_uri=server)
        best = ModelCheckpoint(tmp_path / "best.pt", monitor="val_loss", save_best_only=True)
        backup = BackupAndRestore(tmp_path / "backup")
        callbacks = [backup, best, tracker, CrashOnce()]
        history = trainer.fit(
            x, y, batch_size=8, epochs=3, validation_split=0.2, verbose=0, callbacks=callbacks
        )
        return tracker, history

    with pytest.raises(RuntimeError, match="crash after"):
        fit()
    tracker, history = fit()
    client = MlflowClient(server)
    [run] = client.search_runs([client.get_experiment_by_name("live").experiment_id])
    assert run.info.run_id == tracker.run_id and run.info.status == "FINISHED"
    assert run.data.params["optimizer"] == "SGD"
    for key, values in history.history.items():
        assert steps_and_values(client, run.info.run_id, key) == list(enumerate(values))
    copy = client.download_artifacts(run.info.run_id, "checkpoints/best/best.pt", str(tmp_path))
    assert Path(copy).read_bytes() == (tmp_path / "best.pt").read_bytes()


def test_kill_9_and_a_rerun_leave_each_step_once_with_uninterrupted_values(store, tmp_path):
    """tests/mlflow_kill_run.py: runs killed just after a mid-epoch backup, just after an
    MLflow write of batch or epoch values, and mid-epoch with nothing saved, with
    MLflowLogger before and after BackupAndRestore; each rerun finishes the same run."""
    root = str(TESTS.parent)
    done = subprocess.run(
        [sys.executable, str(TESTS / "mlflow_kill_run.py"), str(tmp_path / "work"), store],
        capture_output=True, text=True, timeout=400, env={**os.environ, "PYTHONPATH": root},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    reference, *killed = json.loads(done.stdout)
    assert reference["exits"] == [0] and reference["statuses"] == ["FINISHED"]
    assert [step for step, _ in reference["metrics"]["val_loss"]] == [0, 1, 2]
    assert [step for step, _ in reference["metrics"]["batch_loss"]] == [2, 4, 6, 8, 10, 12]
    assert len(killed) == 6 and all(trial["exits"] == [-9, 0] for trial in killed)
    differing = [
        trial["experiment"]
        for trial in killed
        if (trial["runs"], trial["statuses"], trial["params"], trial["metrics"])
        != (1, ["FINISHED"], reference["params"], reference["metrics"])
    ]
    assert differing == []


def test_an_optuna_study_prunes_the_bad_trials_and_its_best_is_the_logged_best(store, tmp_path):
    """The recipe of docs/tracking.md: each trial a fit in an MLflow run of its own; a SQLite
    study whose MedianPruner stops the trials with a learning rate too small to learn."""
    mlflow.set_tracking_uri(store)
    mlflow.set_experiment("study")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(
        study_name="lr", storage=storage, direction="minimize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )  # fmt: skip
    for lr in [0.05, 0.02, 1e-5, 0.03, 1e-6]:
        study.enqueue_trial({"lr": lr})

    def objective(trial: optuna.Trial) -> float:
        trainer, x, y = small_fit(lr=trial.suggest_float("lr", 1e-6, 0.1, log=True))
        with mlflow.start_run(run_name=f"trial-{trial.number}") as run:
            trial.set_user_attr("run_id", run.info.run_id)
            history = trainer.fit(
                x, y, batch_size=8, epochs=4, validation_split=0.2, verbose=0,
                callbacks=[MLflowLogger(params=trial.params), OptunaPruning(trial, "val_loss")],
            )  # fmt: skip
        return min(history.history["val_loss"])

    study.optimize(objective, n_trials=5)
    study = optuna.load_study(study_name="lr", storage=storage)  # as stored in the database
    states = [trial.state.name for trial in study.trials]
    # the two startup trials complete; the ones too slow to learn stop after the warm-up
    # epoch (whether lr=0.03 beats the median at each epoch is the pruner's call)
    assert states[:3] == ["COMPLETE", "COMPLETE", "PRUNED"] and states[4] == "PRUNED"
    client = MlflowClient(store)
    for trial in study.trials:
        run = client.get_run(trial.user_attrs["run_id"])
        assert float(run.data.params["lr"]) == trial.params["lr"]
        assert run.info.status == ("FINISHED" if trial.state.name == "COMPLETE" else "FAILED")
        logged = steps_and_values(client, run.info.run_id, "val_loss")
        assert logged == sorted(trial.intermediate_values.items())  # reported = logged
        if trial.params["lr"] < 1e-4:
            assert [step for step, _ in logged] == [0, 1]  # pruned after the warm-up epoch
    best_logged = steps_and_values(client, study.best_trial.user_attrs["run_id"], "val_loss")
    assert study.best_value == min(value for _, value in best_logged)
    assert study.best_params["lr"] in (0.05, 0.02, 0.03)


def test_a_missing_monitor_is_named_and_a_pruned_trial_stops_the_fit():
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=-1.0))  # prunes all
    trainer, x, y = small_fit()
    trial = study.ask()
    with pytest.warns(UserWarning, match=r"`val_los` to report.*Did you mean 'val_loss'"):
        history = trainer.fit(
            x, y, epochs=2, validation_split=0.2, verbose=0,
            callbacks=[OptunaPruning(trial, monitor="val_los")],
        )  # fmt: skip
    assert history.epoch == [0, 1]
    assert study.trials[-1].intermediate_values == {}
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 0"):
        trainer.fit(
            x, y, epochs=3, validation_split=0.2, verbose=0, callbacks=[OptunaPruning(trial)]
        )
    assert list(study.trials[-1].intermediate_values) == [0]


def test_under_torchrun_rank_0_alone_logs_and_every_rank_stops_when_pruned(store, tmp_path):
    """tests/ddp_scripts/tracking_ddp.py: an MLflowLogger given to rank 0 only, then one on
    both ranks with an OptunaPruning whose trial (on rank 0) the MedianPruner prunes; and
    log_model refused for an FSDP-sharded module."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    script = TESTS / "ddp_scripts" / "tracking_ddp.py"
    done = launch.run(script, tmp_path, 2, "--uri", store, "--storage", storage, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for rank in (0, 1):
        result = json.loads((tmp_path / f"result_rank{rank}.json").read_text())
        assert result["epochs"] == [0, 1] and result["pruned"] == "Trial was pruned at epoch 1."
        assert "cannot log an FSDP-sharded module" in result["fsdp_log_model"]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    first, pruned = sorted(runs, key=lambda run: run.info.start_time)
    assert first.info.status == "FINISHED" and first.data.params["world_size"] == "2"
    assert [s for s, _ in steps_and_values(client, first.info.run_id, "loss")] == [0, 1]
    # 24 training samples, 12 a rank, batches of 4: 6 batches in 2 epochs, each logged once
    batch_steps = [s for s, _ in steps_and_values(client, first.info.run_id, "batch_loss")]
    assert batch_steps == [1, 2, 3, 4, 5, 6]
    trial = optuna.load_study(study_name="ddp", storage=storage).trials[-1]
    assert trial.state.name == "PRUNED"
    logged = steps_and_values(client, pruned.info.run_id, "val_loss")
    assert logged == sorted(trial.intermediate_values.items()) and len(logged) == 2
