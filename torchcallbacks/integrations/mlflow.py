"""`MLflowLogger`: a fit's settings, metrics, checkpoints and model in an MLflow run."""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

from torchcallbacks.callbacks.base import Callback, to_float
from torchcallbacks.callbacks.model_checkpoint import ModelCheckpoint
from torchcallbacks.distributed import checkpoint as distributed_checkpoint
from torchcallbacks.distributed import process_group as distributed
from torchcallbacks.distributed.fsdp import is_sharded
from torchcallbacks.losses import loss_name
from torchcallbacks.utils import require

# MLflow's limits for one log_batch request.
_PARAMS_PER_REQUEST = 100
_METRICS_PER_REQUEST = 1000


class MLflowLogger(Callback):
    """Record a fit in an MLflow run: settings as params, logs as metrics, checkpoints and
    the model as artifacts (extra ``torchcallbacks[mlflow]``).

    Example::

        import torch
        from torchcallbacks import ModelCheckpoint, Trainer
        from torchcallbacks.integrations import MLflowLogger

        model = torch.nn.Linear(3, 1)
        trainer = Trainer(model, optimizer="sgd", loss="mse")
        x, y = torch.randn(64, 3), torch.randn(64, 1)
        tracker = MLflowLogger(tracking_uri="sqlite:///mlflow.db", experiment_name="demo")
        best = ModelCheckpoint("ckpt/best.pt", monitor="val_loss", save_best_only=True)
        trainer.fit(x, y, epochs=3, validation_split=0.25, callbacks=[best, tracker])
        print(tracker.run_id)

    Which run:

    - ``run_id`` given: that run (it must exist; it is left open at the end); with
      ``experiment_name`` or ``run_name``, refused.
    - else, with neither ``tracking_uri`` nor ``experiment_name`` given, the active run
      (``with mlflow.start_run(): trainer.fit(...)``), left for its ``with`` block to end
      (a ``run_name`` given then warns that it is not used);
    - else a new run named ``run_name`` in ``experiment_name`` (created if needed; with no
      name, the experiment ``mlflow.start_run()`` would use, or ``"Default"`` on another
      ``tracking_uri``), ended as ``FINISHED`` when the fit ends. Each fit starts its own.

    What is logged:

    - params, once per run: ``model`` (the class), ``loss``, ``epochs``, ``batch_size``,
      ``steps_per_epoch``, ``world_size``, the Trainer's options that are set (``precision``,
      ``accumulate_grad_batches``, ``gradient_clip_norm``, ``gradient_clip_value``,
      ``ema_momentum``), ``optimizer`` (the class) and ``optimizer.<name>`` for each of its
      hyper-parameters (``optimizer.lr``, ...) as the fit starts, plus ``params``. A run
      continued with other values keeps its first ones, with a warning naming them.
    - metrics: each epoch's logs (``loss``, ``val_loss``, ``lr``, ...) at ``step=epoch``
      (0-based); with ``log_every_n_steps=N``, the running means of the epoch as
      ``batch_<name>`` every ``N`` training batches, at ``step`` = batches seen in the fit
      (one host sync each time; nothing per batch otherwise).
    - checkpoints (``log_checkpoints=True``), when the fit ends: the best file of each
      ModelCheckpoint of the fit that monitors (``save_best_only`` or ``save_top_k``) under
      ``checkpoints/best/``, and the last file of each one that does not under
      ``checkpoints/last/``; a file named as one logged before it (``a/best.pt`` and
      ``b/best.pt``) goes under ``checkpoints/best/<n>/``, ``n`` its ModelCheckpoint's
      number among them (from 1).
    - the model (``log_model=True``, or a dict of arguments for
      ``mlflow.pytorch.log_model``), when the fit ends, as ``mlflow.pytorch.log_model(
      module, name="model", serialization_format="pickle", step=<last epoch>, ...)``. Give an
      ``input_example`` to store MLflow's ``pt2`` format instead, and ``pip_requirements``
      to skip MLflow's inference of them (which imports packages in a subprocess: slow).

    Resuming (`BackupAndRestore`, ``fit(resume_from=...)``) continues the same run: its id is
    in this callback's state. On resume the run's metric history is read back and the steps
    it already holds are not logged again, so after a crash (even ``kill -9`` between a log
    and the next backup, in either order of this callback and BackupAndRestore) every epoch
    appears once, with the values of an uninterrupted run. A fit that raises leaves the run
    ``RUNNING``, for the rerun to continue.

    Under torchrun only rank 0 talks to MLflow (the epoch logs are averaged over the
    processes already; batch values are rank 0's); the callback runs no collective, so it
    may be given to every process or to rank 0 alone.

    Args:
        experiment_name: experiment of a new run.
        tracking_uri: where MLflow stores runs (``"sqlite:///mlflow.db"``,
            ``"http://host:5000"``); by default MLflow's tracking URI.
        run_id: an existing run to log into.
        run_name: name of a new run.
        tags: tags set on the run.
        params: more params to log (e.g. an Optuna trial's ``trial.params``).
        log_every_n_steps: also log batch values every that many training batches.
        log_checkpoints: log the ModelCheckpoint files of the fit when it ends.
        log_model: log the module with ``mlflow.pytorch.log_model`` when the fit ends
            (``True``, or a dict of its keyword arguments).
    """

    stops_training = False  # its batch hooks never stop training: no per-batch agreement

    def __init__(
        self,
        experiment_name: str | None = None,
        tracking_uri: str | None = None,
        run_id: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        log_every_n_steps: int | None = None,
        log_checkpoints: bool = True,
        log_model: bool | Mapping[str, Any] = False,
    ) -> None:
        super().__init__()
        self._mlflow = require("mlflow", "mlflow", "MLflowLogger")
        if log_every_n_steps is not None and (
            not isinstance(log_every_n_steps, int)
            or isinstance(log_every_n_steps, bool)
            or log_every_n_steps < 1
        ):
            raise ValueError(
                "log_every_n_steps must be a positive number of training batches, or None to "
                f"log epoch values only; got {log_every_n_steps!r}"
            )
        if run_id is not None and (experiment_name is not None or run_name is not None):
            raise ValueError(
                f"MLflowLogger(run_id={run_id!r}) logs into that existing run; experiment_name "
                "and run_name are a new run's settings and would not be used: give run_id, or "
                "experiment_name/run_name for a new run."
            )
        if not isinstance(log_model, bool | Mapping):
            raise TypeError(
                "log_model must be True, False or a dict of mlflow.pytorch.log_model "
                f"arguments; got {log_model!r}"
            )
        self.experiment_name = experiment_name
        self.tracking_uri = tracking_uri
        self.run_name = run_name
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.run_params = dict(params or {})
        self.log_every_n_steps = log_every_n_steps
        self.log_checkpoints = log_checkpoints
        self.log_model = log_model
        self._given_run_id = run_id
        self.run_id: str | None = None  # the run this fit logs into, once known
        self._owns_run = False  # started by this callback: it ends the run
        self._client: Any = None
        self._uri: str | None = None
        self._target: tuple[str | None, str | None] = (None, None)  # (run id, experiment id)
        self._fit_params: dict[str, str] = {}
        self._logged: dict[str, int] = {}  # metric -> last step the run held when resumed
        self._model_steps: set[int] = set()  # steps with a logged model, when resumed
        self._skipped: set[str] = set()

    @property
    def client(self) -> Any:
        """The ``mlflow.MlflowClient`` of the tracking URI (rank 0, after the fit began)."""
        return self._client

    def implements_batch_hooks(self, mode: str) -> bool:
        return mode == "train" and self.log_every_n_steps is not None

    def needs_batch_logs(self, mode: str) -> bool:
        return False  # it reads the running means itself, only on the steps it logs

    @property
    def _main(self) -> bool:
        return distributed.rank() == 0

    # -- the run -----------------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        self.run_id, self._owns_run = None, False
        self._logged, self._skipped, self._model_steps = {}, set(), set()
        if self.log_model and is_sharded(self.model):
            raise ValueError(
                "MLflowLogger(log_model=...) cannot log an FSDP-sharded module from rank 0: "
                "log its ModelCheckpoint file instead (a weights-only ModelCheckpoint holds "
                "the full state_dict; log_checkpoints=True logs it)."
            )
        if not self._main:
            return
        self._fit_params = self._settings()  # as the fit starts, before any LR change
        self._client = None  # this fit's tracking URI (MLflow's may have changed)
        self._target = self._resolve_target()

    def _connect(self) -> Any:
        if self._client is None:
            self._uri = self.tracking_uri or self._mlflow.get_tracking_uri()
            self._client = self._mlflow.MlflowClient(self._uri)
        return self._client

    def _resolve_target(self) -> tuple[str | None, str | None]:
        """(run to join, experiment of a new run), checked now rather than after an epoch."""
        client = self._connect()
        if self._given_run_id is not None:
            self._existing_run(self._given_run_id, "run_id")
            return self._given_run_id, None
        active = self._mlflow.active_run()
        if active is not None and self.tracking_uri is None and self.experiment_name is None:
            if self.run_name is not None:
                warnings.warn(
                    f"MLflowLogger(run_name={self.run_name!r}) is not used: the fit logs into "
                    f"the active run {active.info.run_id} (name it in mlflow.start_run("
                    "run_name=...)), or give experiment_name= to start a new run.",
                    stacklevel=3,
                )
            return active.info.run_id, None
        if self.experiment_name is not None:
            experiment = client.get_experiment_by_name(self.experiment_name)
            if experiment is not None:
                return None, experiment.experiment_id
            return None, client.create_experiment(self.experiment_name)
        if self.tracking_uri is None:  # as mlflow.start_run(): set_experiment, env, default
            from mlflow.tracking.fluent import _get_experiment_id

            return None, _get_experiment_id()
        return None, "0"  # the "Default" experiment of every store

    def _existing_run(self, run_id: str, source: str) -> Any:
        try:
            return self._client.get_run(run_id)
        except self._mlflow.exceptions.MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise ValueError(
                f"MLflowLogger: {source} names MLflow run {run_id!r}, which the tracking store "
                f"{self._uri!r} does not have ({error.message}). Point tracking_uri at the "
                "store that holds it."
            ) from None

    def _ensure_run(self) -> str:
        """The run to log into, started (with its params) at the first use in this fit."""
        if self.run_id is None:
            run_id, experiment_id = self._target
            if run_id is None:
                run = self._client.create_run(experiment_id, run_name=self.run_name)
                run_id, self._owns_run = run.info.run_id, True
            self.run_id = run_id
            self._log_params_and_tags()
        return self.run_id

    def _log_params_and_tags(self) -> None:
        from mlflow.entities import Param, RunTag

        held = self._client.get_run(self.run_id).data.params
        wanted = {**self._fit_params, **{str(k): str(v) for k, v in self.run_params.items()}}
        changed = sorted(k for k, v in wanted.items() if k in held and held[k] != v)
        if changed:
            warnings.warn(
                f"MLflowLogger: run {self.run_id} already holds the params "
                + ", ".join(f"{k}={held[k]!r} (this fit: {wanted[k]!r})" for k in changed)
                + "; MLflow params cannot change, so the run keeps its first values.",
                stacklevel=3,
            )
        new = [Param(k, v) for k, v in wanted.items() if k not in held]
        tags = [RunTag(k, v) for k, v in self.tags.items()]
        if tags:
            self._client.log_batch(self.run_id, tags=tags, synchronous=True)
        for start in range(0, len(new), _PARAMS_PER_REQUEST):
            chunk = new[start : start + _PARAMS_PER_REQUEST]
            self._client.log_batch(self.run_id, params=chunk, synchronous=True)

    def _settings(self) -> dict[str, str]:
        """The Trainer's, the fit's and the optimizer's settings, as MLflow params."""
        trainer, params = self.trainer, self.params or {}
        ema = getattr(trainer, "ema", None)
        settings: dict[str, Any] = {
            "model": type(self.model).__name__,
            "loss": _loss_text(getattr(getattr(trainer, "objective", None), "loss_spec", None)),
            "epochs": params.get("epochs"),
            # fit's batch_size batches in-memory data only (a DataLoader has its own)
            "batch_size": trainer.batch_size if trainer.samples_per_epoch is not None else None,
            "steps_per_epoch": params.get("steps"),
            "world_size": distributed.world_size(),
            "precision": getattr(trainer, "precision", None),
            "accumulate_grad_batches": getattr(trainer, "accumulate_grad_batches", None),
            "gradient_clip_norm": getattr(trainer, "gradient_clip_norm", None),
            "gradient_clip_value": getattr(trainer, "gradient_clip_value", None),
            "ema_momentum": None if ema is None else ema.momentum,
        }
        optimizer = self.optimizer
        if optimizer is not None:
            settings["optimizer"] = type(optimizer).__name__
            group = optimizer.param_groups[0]
            for name in optimizer.defaults:
                settings[f"optimizer.{name}"] = group.get(name)
        return {k: str(v) for k, v in settings.items() if v is not None}

    # -- resume ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "owns_run": self._owns_run}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        run_id = state.get("run_id")
        if run_id is None:  # saved before the run started: this fit starts it
            return
        self.run_id, self._owns_run = run_id, bool(state.get("owns_run"))
        if not self._main:
            return
        self._connect()
        joined = self._target[0]
        if joined is not None and joined != run_id:
            warnings.warn(
                f"MLflowLogger: this fit resumes one that logged into MLflow run {run_id}, "
                f"which it continues; run {joined} (given or active) gets nothing.",
                stacklevel=2,
            )
        run = self._existing_run(run_id, "the resumed checkpoint")
        # What the run holds already (logged before a crash, perhaps after the last backup)
        # is not logged again: the resumed fit computes the same values.
        self._logged = {
            key: max(m.step for m in self._client.get_metric_history(run_id, key))
            for key in run.data.metrics
        }
        self._model_steps = {o.step for o in getattr(run.outputs, "model_outputs", None) or []}
        self._log_params_and_tags()

    # -- metrics -----------------------------------------------------------------------------
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._main:
            self._ensure_run()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._main:
            self._log_metrics(logs or {}, epoch, "")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        every, step = self.log_every_n_steps, self.trainer.global_train_batch
        if every is not None and step % every == 0 and self._main:
            self._log_metrics(self.trainer.running_logs(), step, "batch_")

    def _log_metrics(self, values: Mapping[str, Any], step: int, prefix: str) -> None:
        from mlflow.entities import Metric

        run_id = self._ensure_run()
        now = int(time.time() * 1000)
        metrics = []
        for name, value in values.items():
            key, value = prefix + name, to_float(value)
            if not isinstance(value, int | float) or isinstance(value, bool):
                if key not in self._skipped:
                    self._skipped.add(key)
                    warnings.warn(
                        f"MLflowLogger: {key!r} is not a number ({value!r}); MLflow metrics "
                        "are scalars, so it is not logged.",
                        stacklevel=3,
                    )
                continue
            if step > self._logged.get(key, -math.inf):
                metrics.append(Metric(key, float(value), now, step))
        for start in range(0, len(metrics), _METRICS_PER_REQUEST):
            self._client.log_batch(
                run_id, metrics=metrics[start : start + _METRICS_PER_REQUEST], synchronous=True
            )

    # -- artifacts ---------------------------------------------------------------------------
    def on_train_end(self, logs: dict | None = None) -> None:
        if not self._main:
            return
        run_id = self._ensure_run()
        if self.log_checkpoints:
            self._log_checkpoint_files(run_id)
        if self.log_model:
            self._log_module(run_id)
        if self._owns_run:
            self._client.set_terminated(run_id, "FINISHED")

    def _log_checkpoint_files(self, run_id: str) -> None:
        running = getattr(self.trainer, "_callbacks", None)
        checkpoints = [c for c in running or [] if isinstance(c, ModelCheckpoint)]
        if not checkpoints:
            return
        distributed_checkpoint.finish_saves()  # a sharded save still written in the background
        logged: set[str] = set()
        for number, checkpoint in enumerate(checkpoints, 1):
            path = checkpoint.best_model_path
            if path is None or not os.path.exists(path):
                continue
            monitors = checkpoint.save_best_only or checkpoint.save_top_k is not None
            folder = "checkpoints/best" if monitors else "checkpoints/last"
            name = os.path.basename(os.path.normpath(path))
            if f"{folder}/{name}" in logged:  # another ModelCheckpoint's file of that name
                folder = f"{folder}/{number}"
            logged.add(f"{folder}/{name}")
            if os.path.isdir(path):  # a sharded checkpoint: a directory of shards
                self._client.log_artifacts(run_id, path, f"{folder}/{name}")
            else:
                self._client.log_artifact(run_id, path, folder)

    def _log_module(self, run_id: str) -> None:
        options = dict(self.log_model) if isinstance(self.log_model, Mapping) else {}
        options.setdefault("name", "model")
        epochs = getattr(self.trainer.history, "epoch", None) or [0]  # resumed ones included
        options.setdefault("step", epochs[-1])
        if options["step"] in self._model_steps:  # logged before a crash
            return
        if "input_example" not in options:  # pt2 (MLflow's default) needs an example input
            options.setdefault("serialization_format", "pickle")
        if "model_id" not in options:  # else MLflow files it under the active experiment
            experiment_id = self._client.get_run(run_id).info.experiment_id
            options["model_id"] = self._client.create_logged_model(
                experiment_id, name=options["name"], source_run_id=run_id
            ).model_id
        mlflow = self._mlflow
        switch = mlflow.get_tracking_uri() != self._uri  # log_model uses the global URI
        previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
        if switch:
            mlflow.set_tracking_uri(self._uri)
        try:
            mlflow.pytorch.log_model(self.model, run_id=run_id, **options)
        finally:
            if switch:  # None: unset again, as it was
                mlflow.set_tracking_uri(previous)


def _loss_text(spec: Any) -> str | None:
    """The loss as given to the Trainer, by name (per output for several outputs)."""
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        return str({key: loss_name(value) for key, value in spec.items()})
    if isinstance(spec, list | tuple):
        return str([loss_name(value) for value in spec])
    return loss_name(spec)
