"""Experiment trackers (``train.log``): every record of ``metrics.jsonl`` also goes to TensorBoard,
MLflow or Weights & Biases, behind one interface (:class:`RunLogger`).

=============  ===============================================================================
``none``       metrics.jsonl only (the default)
``tensorboard`` event files in ``RUN/tensorboard`` (``pip install tensorboard``)
``mlflow``     an MLflow run in the file store ``RUN/mlflow`` (``mlflow ui --backend-store-uri
               RUN/mlflow``, with ``MLFLOW_ALLOW_FILE_STORE=true``: MLflow 3 keeps its file store
               behind that switch, which dicc sets for its own process), or on the tracking
               server / database ``MLFLOW_TRACKING_URI`` names when it is set; experiment
               ``dicc``, the resolved config as parameters (``pip install mlflow-skinny``)
``wandb``      a W&B run in ``RUN/wandb``, offline (``wandb sync RUN/wandb/wandb/offline-run-*``
               uploads it; ``WANDB_MODE`` chooses another mode, ``WANDB_PROJECT`` the project,
               default ``dicc``), the resolved config as its config (``pip install wandb``)
=============  ===============================================================================

Epoch lines become scalars at step ``epoch``: ``train_*``, ``val_*`` and ``time_*`` keys as
``train/loss``, ``train/accuracy``, ``val/mean_class_accuracy``, ``time/epoch``..., other
numbers (``lr``) under their own name. Events (DICC's ``recluster``, LDAM's ``drw_on``,
``early_stop``) are kept whole: text in TensorBoard, a JSON artifact ``events/<epoch>_<event>.json``
in MLflow, a string ``event/<event>`` in W&B. A tracker is opened at the first record (nothing is
written before training starts); a resumed run continues the MLflow run / W&B run id it logged
to (``RUN/<tracker>/run_id``). A package that is not installed is one line at config check time
(:func:`check_logger`), before anything is written.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
import uuid
from pathlib import Path

#: ``train.log`` values and the package each needs
LOGGERS = {"none": None, "tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def check_logger(kind) -> None:
    """Raise ``ValueError`` (one line) for an unknown ``train.log`` or one whose package is missing."""
    if kind not in LOGGERS:
        raise ValueError(f"train.log: unknown logger {kind!r}; valid: {', '.join(LOGGERS)}")
    package = LOGGERS[kind]
    if package is not None and importlib.util.find_spec(package) is None:
        raise ValueError(f"train.log={kind}: {package} is not installed (pip install {package})")


def scalar_name(key: str) -> str:
    """``val_mean_class_accuracy`` -> ``val/mean_class_accuracy``; ``lr`` -> ``lr``."""
    if key.startswith(("val_", "train_", "time_")):
        group, _, name = key.partition("_")
        return f"{group}/{name}"
    return key


class RunLogger:
    """One tracker of one run: :meth:`log` takes every ``metrics.jsonl`` record, :meth:`close`
    ends it. Subclasses open their backend in :meth:`_open` (at the first record) and write in
    :meth:`_scalars` and :meth:`_event`."""

    name = ""

    def __init__(self, run_dir: str | Path, config: dict | None = None, resume: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / self.name
        self.config = config or {}
        self.resume = resume
        self._opened = False

    def log(self, record: dict) -> None:
        if not self._opened:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._open()
            self._opened = True
        step = int(record.get("epoch", 0))
        if "event" in record:
            self._event(str(record["event"]), record, step)
            return
        values = {
            scalar_name(k): float(v)
            for k, v in record.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if values:
            self._scalars(values, step)

    def close(self) -> None:
        if self._opened:
            self._close()
            self._opened = False

    # -- a resumed run continues the tracker's run ----------------------------------------------
    def _saved_run_id(self) -> str | None:
        path = self.dir / "run_id"
        return (path.read_text().strip() or None) if self.resume and path.is_file() else None

    def _save_run_id(self, run_id: str) -> None:
        from .atomic import write_text_atomic

        write_text_atomic(self.dir / "run_id", run_id)

    # -- what a backend implements -------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _scalars(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def _event(self, name: str, record: dict, step: int) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class TensorBoardLogger(RunLogger):
    name = "tensorboard"

    def _open(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.dir))

    def _scalars(self, values, step):
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def _event(self, name, record, step):
        self.writer.add_text(f"event/{name}", json.dumps(record), step)
        self.writer.flush()

    def _close(self):
        self.writer.close()


class MLflowLogger(RunLogger):
    name = "mlflow"

    def _open(self) -> None:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # the run directory's own file store (MLflow 3 asks for this opt-in to use one)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = self.dir.resolve().as_uri()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = self._saved_run_id()
        if self.run_id is None:
            exp = self.client.get_experiment_by_name("dicc")
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment("dicc")
            run = self.client.create_run(exp_id, run_name=self.run_dir.name, tags={"dicc.run_dir": str(self.run_dir)})
            self.run_id = run.info.run_id
            self._save_run_id(self.run_id)
            from mlflow.entities import Param

            from .config import flatten

            params = [Param(k, str(v)[:500]) for k, v in sorted(flatten(self.config).items())]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
                self.client.log_batch(self.run_id, params=params[i : i + 100])

    def _scalars(self, values, step):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def _event(self, name, record, step):
        self.client.log_dict(self.run_id, record, f"events/{step:04d}_{name}.json")

    def _close(self):
        self.client.set_terminated(self.run_id)


class WandbLogger(RunLogger):
    name = "wandb"

    def _open(self) -> None:
        import wandb

        run_id = self._saved_run_id() or uuid.uuid4().hex[:12]
        self.run = wandb.init(
            mode=os.environ.get("WANDB_MODE", "offline"),
            dir=str(self.dir),
            project=os.environ.get("WANDB_PROJECT", "dicc"),
            name=self.run_dir.name,
            id=run_id,
            resume="allow",
            reinit="finish_previous",
            config=self.config,
            settings=wandb.Settings(console="off", silent=True),
        )
        self._save_run_id(run_id)
        # x = the epoch, so the epochs a resumed run redoes are logged again at their own epoch
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")

    def _scalars(self, values, step):
        self.run.log({"epoch": step, **values})

    def _event(self, name, record, step):
        self.run.log({"epoch": step, f"event/{name}": json.dumps(record)})

    def _close(self):
        self.run.finish()


_CLASSES = {"tensorboard": TensorBoardLogger, "mlflow": MLflowLogger, "wandb": WandbLogger}


def create_logger(kind: str, run_dir: str | Path, config: dict | None = None, resume: bool = False):
    """The :class:`RunLogger` for ``train.log=kind`` (None for ``none``); opened at its first record."""
    check_logger(kind)
    cls = _CLASSES.get(kind)
    return cls(run_dir, config, resume) if cls is not None else None


__all__ = ["LOGGERS", "RunLogger", "check_logger", "create_logger", "scalar_name"]
