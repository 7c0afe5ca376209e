"""Knowledge distillation from one or more trained teachers (Hinton et al. 2015), ``distill.*``.

The teachers' class probabilities on every training image are computed once, before training
(eval mode, each teacher with its own normalisation and the test-time views ``distill.tta``,
without a post-hoc logit adjustment the teacher's checkpoint may carry: the student's own is
chosen for it; several teachers are averaged in probability space), and the student's
training loss becomes

    weight * T^2 * KL(teacher_T || student_T) + (1 - weight) * (the method's own loss)

with ``p_T = softmax(log p / T)``. It composes with every method: the KL term is taken on the
student's parent logits (DICC's sub-classes merged), the method's own loss is untouched, and
mixup mixes the two terms as it mixes the method's (the engine calls the loss once per
partner). Only training changes: evaluation, checkpoints and export see the wrapped strategy.

The targets are cached in the run directory (``distill_targets.pt``, keyed by the teachers'
file digests, the views and the data), so a resumed run reads them instead of recomputing.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

logger = logging.getLogger("dicc")

CACHE_NAME = "distill_targets.pt"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def teacher_paths(teachers: Sequence[str]) -> list[Path]:
    """The checkpoint file of each teacher (a ``.pt``, a run directory, or ``default``)."""
    from .checkpoint import load_checkpoint

    return [Path(load_checkpoint(t)["_path"]) for t in teachers]


def _check_teacher(ckpt: dict, dataset) -> None:
    """A teacher predicts the dataset's classes, in its order, at its image size and channels."""
    where, norm = ckpt["_path"], ckpt["normalization"]
    if list(ckpt["class_names"]) != list(dataset.class_names):
        raise ValueError(
            f"distill.teacher {where}: predicts {', '.join(ckpt['class_names'])}, the training data has "
            f"{', '.join(dataset.class_names)} (teacher and student need the same label space)"
        )
    if (int(norm["image_size"]), int(norm["channels"])) != (dataset.image_size, dataset.channels):
        raise ValueError(
            f"distill.teacher {where}: takes {norm['channels']}x{norm['image_size']}x{norm['image_size']} "
            f"images, the training data is {dataset.channels}x{dataset.image_size}x{dataset.image_size}"
        )


def load_teachers(teachers: Sequence[str], dataset, *, device="cpu", precision=None) -> list[tuple]:
    """``(path, model, strategy, normalisation)`` of every teacher, in eval mode on ``device``.
    Each teacher must predict the dataset's classes, in its order, at its image size and
    channels: anything else is a ``ValueError`` naming it."""
    from .checkpoint import load_checkpoint, model_from_checkpoint

    if not teachers:
        raise ValueError("distill.teacher: give at least one checkpoint or run directory")
    out = []
    for name in teachers:
        ckpt = load_checkpoint(name)
        where, norm = ckpt["_path"], ckpt["normalization"]
        _check_teacher(ckpt, dataset)
        model, strategy = model_from_checkpoint(ckpt)
        strategy = getattr(strategy, "inner", strategy)  # as trained: without its post-hoc adjustment
        model.to(device).eval()
        if precision is not None:
            precision.prepare_model(model)
        out.append((where, model, strategy, norm))
    return out


@torch.no_grad()
def teacher_log_probs(
    teachers: Sequence[str],
    dataset,
    *,
    tta: str = "crops",
    batch_size: int = 512,
    device="cpu",
    precision=None,
) -> torch.Tensor:
    """``log`` of the teachers' mean class probabilities ``[len(dataset), num_classes]`` on every
    image of ``dataset`` (float32, on the CPU). Each teacher must predict the dataset's classes,
    in its order, at its image size and channels: anything else is a ``ValueError`` naming it."""
    from .inference import predict_parent_logits

    total = None
    for where, model, strategy, norm in load_teachers(teachers, dataset, device=device, precision=precision):
        logits = predict_parent_logits(
            model,
            strategy,
            dataset,
            batch_size=batch_size,
            device=device,
            mean=norm["mean"],
            std=norm["std"],
            precision=precision,
            tta=tta,
        )
        probs = logits.float().softmax(1).cpu()
        total = probs if total is None else total + probs
        logger.info(f"distill: teacher {where} ({tta} views) on {len(dataset)} training images")
    return (total / len(teachers)).clamp_min(1e-12).log()


def cached_teacher_log_probs(cfg, dataset, run_dir: Path | None, **kw) -> torch.Tensor:
    """:func:`teacher_log_probs`, read from ``run_dir/distill_targets.pt`` when that file was made
    from the same teacher files, views and data (else computed and written there)."""
    from .atomic import save_atomic

    key = {
        "teachers": [_digest(p) for p in teacher_paths(cfg.teacher)],
        "tta": cfg.tta,
        "n": len(dataset),
        "labels": hashlib.sha256(dataset.labels.numpy().tobytes()).hexdigest(),
        "class_names": list(dataset.class_names),
    }
    path = Path(run_dir) / CACHE_NAME if run_dir is not None else None
    if path is not None and path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("key") == key:
                return saved["log_probs"]
        except Exception:  # noqa: BLE001 - an unreadable cache is recomputed
            pass
    log_probs = teacher_log_probs(cfg.teacher, dataset, tta=cfg.tta, **kw)
    if path is not None:
        save_atomic({"key": key, "log_probs": log_probs}, path)
    return log_probs


def distillation_loss(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, temperature: float):
    """``T^2 * KL(softmax(t / T) || softmax(s / T))``, averaged over the batch (Hinton et al.'s
    scaling keeps the gradient's size independent of ``T``)."""
    t = float(temperature)
    target = F.log_softmax(teacher_log_probs / t, dim=1)
    student = F.log_softmax(student_logits / t, dim=1)
    return F.kl_div(student, target, reduction="batchmean", log_target=True) * (t * t)


class BatchTeachers:
    """The teachers scoring a training batch as the student gets it (``distill.targets:
    augmented``): the batch, normalised with the student's ``mean`` / ``std``, is brought back to
    pixels and normalised with each teacher's own; ``log`` of the mean class probabilities."""

    def __init__(self, teachers: Sequence[str], dataset, *, device="cpu", precision=None) -> None:
        self.members = load_teachers(teachers, dataset, device=device, precision=precision)
        self.precision = precision
        for where, *_ in self.members:
            logger.info(f"distill: teacher {where} on every training batch (augmented views)")

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, mean, std) -> torch.Tensor:
        from .data.transforms import _per_channel

        pixels = x.float() * _per_channel(std, x) + _per_channel(mean, x)
        total = None
        for _, model, strategy, norm in self.members:
            xt = (pixels - _per_channel(norm["mean"], x)) / _per_channel(norm["std"], x)
            if self.precision is not None:
                with self.precision.autocast():
                    out = model(self.precision.prepare_input(xt))
            else:
                out = model(xt)
            probs = strategy.parent_logits(out.float()).softmax(1)
            total = probs if total is None else total + probs
        return (total / len(self.members)).clamp_min(1e-12).log()


class Distilled:
    """A view of ``strategy`` whose training loss adds the distillation term; everything else
    (outputs, evaluation, state, name) is the wrapped strategy's."""

    def __init__(
        self, strategy, log_probs: torch.Tensor | None, temperature: float, weight: float, batch_teachers=None
    ) -> None:
        if (log_probs is None) == (batch_teachers is None):
            raise ValueError("distill: give the teachers' targets or the teachers, not both")
        if log_probs is not None and log_probs.shape != (len(log_probs), strategy.num_classes):
            shape = list(log_probs.shape)
            raise ValueError(f"distill: teacher targets of shape {shape} for {strategy.num_classes} classes")
        self.inner = strategy
        self.targets = log_probs.float() if log_probs is not None else None
        self.batch_teachers, self._batch = batch_teachers, None
        self.temperature, self.weight = float(temperature), float(weight)

    def observe_inputs(self, x: torch.Tensor, mean, std) -> None:
        if self.batch_teachers is not None:  # the teachers' view of this very batch
            self._batch = self.batch_teachers(x, mean, std)
        self.inner.observe_inputs(x, mean, std)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        if self.targets is not None:
            teacher = self.targets.to(logits.device)[indices]
        else:
            if self._batch is None or len(self._batch) != len(logits):
                raise RuntimeError("distill: the batch's teacher targets are missing (observe_inputs first)")
            teacher = self._batch.to(logits.device)
        kd = distillation_loss(self.inner.parent_logits(logits), teacher, self.temperature)
        if self.weight >= 1.0:
            return kd
        return self.weight * kd + (1.0 - self.weight) * self.inner.loss(logits, targets, indices)

    def __getattr__(self, name):  # everything else is the wrapped strategy's
        if name == "inner":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def with_distillation(strategy, cfg, dataset, run_dir: Path | None = None, **kw):
    """``strategy`` itself when ``cfg.teacher`` is empty, else :class:`Distilled` with the
    teachers' targets on ``dataset`` (the run's training split, by dataset index)."""
    if not cfg.teacher:
        return strategy
    if getattr(cfg, "targets", "images") == "augmented":
        kw.pop("batch_size", None)
        return Distilled(strategy, None, cfg.temperature, cfg.weight, BatchTeachers(cfg.teacher, dataset, **kw))
    log_probs = cached_teacher_log_probs(cfg, dataset, run_dir, **kw)
    return Distilled(strategy, log_probs, cfg.temperature, cfg.weight)


__all__ = ["BatchTeachers", "Distilled", "distillation_loss", "teacher_log_probs", "with_distillation"]
