"""Export a checkpoint to ONNX: image batch in, parent-class probabilities out.

The exported graph is ``softmax(strategy.parent_logits(model(x)))``: the strategy's mapping
from the head's outputs (DICC's sub-classes, LDAM's scale, post-hoc logit adjustment) to the
classes is part of the model, so a consumer of the file only ever sees one probability per
class. Input ``"input"``: ``float32 [B, C, S, S]``, either the face's pixels as they are
(``input="pixels"``, 0..255, what ``dicc export`` writes by default: the graph begins with the
dataset normalisation ``(x / 255 - mean) / std``) or already normalised as in training
(``input="normalized"``, the only form before, and the default of the Python functions); output
``"probabilities"``: ``float32 [B, num_classes]``; the batch axis is dynamic. The file's
``metadata_props`` carry ``class_names`` (JSON), ``mean``, ``std`` (the dataset's, in both
forms), ``image_size``, ``channels``, ``input`` (``pixels`` or ``normalized``; a file without
it is ``normalized``) and ``tta`` (the checkpoint's test-time augmentation, which is applied
outside the graph), which :meth:`dicc.predict.Recognizer.from_onnx` reads.

Some ways of writing a sub-class -> class merge do not survive the TorchScript exporter (for
instance ``index_add`` with repeated indices exports as a scatter that keeps only one value).
Every export is therefore checked with onnxruntime against PyTorch; when the strategy's own
``parent_logits`` fails to export or to reproduce, the merge is rebuilt from a fixed 0/1
sub-class -> class matrix (logsumexp written as per-group max, exp, sum, log), after checking that
this matrix form reproduces ``parent_logits`` exactly in PyTorch.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import atomic_path
from .predict.backends import INPUT_KINDS

ONNX_FORMAT = "dicc-onnx"
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
TOLERANCE = 1e-4
CLI_INPUT = "pixels"  # what `dicc export` writes without --input


class PixelInput(nn.Module):
    """``inner((x / 255 - mean) / std)``: a model that takes pixels 0..255 (float) and normalises
    them as training does (:func:`dicc.data.transforms.normalize`, the same float32 operations),
    ``mean``/``std`` numbers or one per channel."""

    def __init__(self, inner: nn.Module, mean, std) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("mean", self._constant(mean))
        self.register_buffer("std", self._constant(std))

    @staticmethod
    def _constant(v) -> torch.Tensor:
        if isinstance(v, (list, tuple)):
            return torch.tensor([float(u) for u in v], dtype=torch.float32).view(1, -1, 1, 1)
        return torch.tensor(float(v), dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x / 255.0 - self.mean) / self.std)


class ProbabilityModel(nn.Module):
    """``softmax(strategy.parent_logits(model(x)))``: what prediction and export compute."""

    def __init__(self, model: nn.Module, strategy) -> None:
        super().__init__()
        self.model = model
        self.strategy = strategy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.strategy.parent_logits(self.model(x).float()), dim=1)


class GroupedProbabilityModel(nn.Module):
    """The merge as fixed tensors: ``parent = merge_groups(z) + offset`` with a 0/1 matrix
    ``groups [S, C]`` (a zero row: an output no class uses) and ``merge`` = logsumexp (written
    as per-group max, exp, sum, log, stable for any logits) or max."""

    def __init__(self, model: nn.Module, groups: torch.Tensor, offset: torch.Tensor, merge: str) -> None:
        super().__init__()
        if merge not in ("logsumexp", "max"):
            raise ValueError(f"unknown merge {merge!r}; valid: logsumexp, max")
        self.model = model
        self.merge = merge
        self.register_buffer("groups", groups.float())
        self.register_buffer("mask", (1.0 - groups.float()) * -1e9)  # 0 inside a group
        self.register_buffer("offset", offset.float().reshape(1, -1))

    def merged(self, z: torch.Tensor) -> torch.Tensor:
        top = (z.unsqueeze(2) + self.mask.unsqueeze(0)).amax(dim=1)  # [B, C]: the max within each group
        if self.merge == "max":
            return top
        e = torch.exp(z.unsqueeze(2) - top.unsqueeze(1)) * self.groups.unsqueeze(0)  # [B, S, C], <= 1
        return torch.log(e.sum(dim=1)) + top

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.merged(self.model(x).float()) + self.offset, dim=1)


def grouped_model(model: nn.Module, strategy, num_outputs: int, num_classes: int) -> GroupedProbabilityModel:
    """Rebuild ``strategy.parent_logits`` as a :class:`GroupedProbabilityModel` by probing it:
    a large logit on head output ``j`` alone reveals the class ``j`` belongs to (or that no
    class uses it); the merge (logsumexp or max) and a constant per-class offset are then
    fitted and verified on random logits. Raises ``ValueError`` if no such form reproduces ``parent_logits``."""
    with torch.no_grad():
        probe = torch.full((num_outputs + 1, num_outputs), -30.0)
        probe[:num_outputs].fill_diagonal_(30.0)  # the last row is the baseline: all low
        out = strategy.parent_logits(probe).float()
        delta = out[:num_outputs] - out[num_outputs:]
        groups = F.one_hot(delta.argmax(dim=1), num_classes).float()
        groups[delta.abs().amax(dim=1) < 1e-3] = 0  # an output no class depends on (unused rows)
        if (groups.sum(0) == 0).any():
            raise ValueError("some class has no head output that maps to it: parent_logits cannot be rebuilt as groups")
        g = torch.Generator().manual_seed(0)
        z = torch.randn(64, num_outputs, generator=g) * 4
        target = strategy.parent_logits(z).float()
        for merge in ("logsumexp", "max"):
            cand = GroupedProbabilityModel(nn.Identity(), groups, torch.zeros(num_classes), merge)
            base = cand.merged(z)
            offset = (target - base)[0]
            if torch.allclose(base + offset, target, atol=1e-4, rtol=1e-4):
                return GroupedProbabilityModel(model, groups, offset, merge)
    raise ValueError(
        "the strategy's parent_logits is neither a grouped logsumexp nor a grouped max "
        "(plus a constant): it cannot be rebuilt for export"
    )


def _onnx_export(module: nn.Module, example: torch.Tensor, path: str, opset: int, verified: bool = False) -> None:
    """TorchScript-based export; an exporter warning that the graph will be incorrect (e.g.
    ``index_add`` with repeated indices) is raised as an error so the caller falls back. With
    ``verified`` (the caller compares onnxruntime with PyTorch at another batch size) the
    tracer's warnings about Python values taken from tensors are let through: they are the
    shape checks of backbones such as timm's ViTs, constant at the model's fixed input size, and
    a value that did depend on the batch would show in that comparison."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(
            module,
            (example,),
            path,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            do_constant_folding=True,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    for w in caught:
        if "incorrect" in str(w.message).lower() and not (verified and issubclass(w.category, torch.jit.TracerWarning)):
            raise RuntimeError(f"the ONNX exporter warns: {w.message}")


def _ort_max_diff(path: str, reference: nn.Module, x: torch.Tensor) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: x.numpy()})[0]
    with torch.no_grad():
        want = reference(x).numpy()
    if got.shape != want.shape:
        return float("inf")
    return float(abs(got - want).max())


def _needs(check: bool):
    """The onnx module (and, with ``check``, onnxruntime), or an ImportError naming the package."""
    try:
        import onnx
    except ImportError as err:
        raise ImportError(f"ONNX export needs the onnx package: pip install 'dicc[onnx]' ({err})") from None
    if check:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as err:
            raise ImportError(
                f"checking the export needs onnxruntime (a dependency of dicc): pip install onnxruntime, or pass "
                f"check=False / --no-check ({err})"
            ) from None
    return onnx


def _inputs(input: str, normalization: dict, channels: int, size: int):
    """``(front, example, check_x)``: what goes in front of the network (the normalisation, for
    a pixels graph), the tracing batch and a batch of another size (the dynamic axis)."""
    g = torch.Generator().manual_seed(0)
    if input == "pixels":  # the graph takes 0..255: the normalisation goes in front of the model

        def front(m: nn.Module) -> nn.Module:
            return PixelInput(m, normalization["mean"], normalization["std"]).eval()

        example = torch.randint(0, 256, (2, channels, size, size), generator=g).float()
        return front, example, torch.randint(0, 256, (5, channels, size, size), generator=g).float()

    def same(m: nn.Module) -> nn.Module:
        return m

    return same, torch.randn(2, channels, size, size, generator=g), torch.randn(5, channels, size, size, generator=g)


def _export_checked(model, strategy, front, reference, example, check_x, tmp, opset, check, num_classes):
    """Export the strategy's own merge, else (an op the exporter cannot handle, or a difference)
    the fixed matrix form; returns ``(merge, max_abs_diff)``."""
    merge, diff, problem = "strategy", None, None
    try:
        _onnx_export(reference, example, tmp, opset, verified=check)
        if check:
            diff = _ort_max_diff(tmp, reference, check_x)
            if not diff <= TOLERANCE:
                problem = f"onnxruntime differs from PyTorch by {diff:.3g}"
    except Exception as err:  # noqa: BLE001 - an op the exporter cannot handle: try the matrix form
        problem = f"{type(err).__name__}: {err}"
    if problem is None:
        return merge, diff
    with torch.no_grad():
        num_outputs = int(model(torch.zeros(2, *example.shape[1:])).shape[1])
    try:
        grouped = grouped_model(model, strategy, num_outputs, num_classes).eval()
    except ValueError as err:
        raise ValueError(
            f"cannot export the {getattr(strategy, 'name', '?')} strategy's parent_logits ({problem}); {err}"
        ) from None
    _onnx_export(front(grouped), example, tmp, opset, verified=check)
    if check:
        diff = _ort_max_diff(tmp, reference, check_x)
        if not diff <= TOLERANCE:
            raise ValueError(f"ONNX export does not reproduce PyTorch: max |difference| {diff:.3g} (after: {problem})")
    return f"grouped-{grouped.merge}", diff


def _write_metadata(onnx, tmp, meta: dict) -> None:
    """The graph's metadata_props replaced by ``meta``; checked and saved in place."""
    proto = onnx.load(tmp)
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "dicc"
    onnx.checker.check_model(proto)
    onnx.save(proto, tmp)


def export_model_onnx(
    model: nn.Module,
    strategy,
    out_path: str | os.PathLike,
    *,
    class_names,
    normalization: dict,
    opset: int = 17,
    metadata: dict | None = None,
    check: bool = True,
    input: str = "normalized",
) -> dict:
    """Export ``model`` + ``strategy`` (see the module docstring) to ``out_path`` atomically.

    ``normalization`` is a checkpoint's ``{"mean", "std", "image_size", "channels"}``;
    ``input``: ``"pixels"`` (the graph takes 0..255 and normalises) or ``"normalized"``.
    Returns ``{"path", "merge", "max_abs_diff", "num_outputs", "class_names"}``: ``merge`` is
    ``"strategy"`` (its own ``parent_logits`` was exported) or ``"grouped-logsumexp"`` /
    ``"grouped-max"`` (the fixed matrix form); ``max_abs_diff`` is onnxruntime vs PyTorch on
    random inputs (None when ``check=False``). With ``check=True`` a difference above 1e-4 is
    an error. ``model`` itself is left as it is (a CPU copy in eval mode is exported).
    """
    if input not in INPUT_KINDS:
        raise ValueError(f"input must be one of {', '.join(INPUT_KINDS)}, got {input!r}")
    onnx = _needs(check)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    size, channels = int(normalization["image_size"]), int(normalization["channels"])
    model = copy.deepcopy(model).cpu().eval()
    front, example, check_x = _inputs(input, normalization, channels, size)
    reference = front(ProbabilityModel(model, strategy).eval())
    with torch.no_grad():
        num_outputs = int(model(torch.zeros(2, channels, size, size)).shape[1])
    with atomic_path(out_path) as tmp:
        merge, diff = _export_checked(
            model, strategy, front, reference, example, check_x, tmp, opset, check, len(class_names)
        )
        meta = {
            "format": ONNX_FORMAT,
            "class_names": json.dumps(list(class_names)),
            "mean": json.dumps(normalization["mean"]),
            "std": json.dumps(normalization["std"]),
            "image_size": str(size),
            "channels": str(channels),
            "input": input,
            "output": OUTPUT_NAME,
            "merge": merge,
        }
        _write_metadata(onnx, tmp, {**meta, **{k: str(v) for k, v in (metadata or {}).items()}})
    return {
        "path": out_path,
        "merge": merge,
        "max_abs_diff": diff,
        "num_outputs": num_outputs,
        "class_names": list(class_names),
        "input": input,
    }


def export_onnx(
    checkpoint, out_path: str | os.PathLike, opset: int = 17, *, check: bool = True, input: str = "normalized"
) -> dict:
    """Export a checkpoint (a ``.pt`` file, a run directory, ``"default"``, or a dict from
    :func:`dicc.checkpoint.load_checkpoint`) to an ONNX file; see :func:`export_model_onnx`
    (``input``: ``"pixels"`` folds the normalisation into the graph)."""
    from . import __version__
    from .checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    model, strategy = model_from_checkpoint(ckpt)
    spec = ckpt.get("model_spec", {})
    extra = {
        "dicc_version": __version__,
        "model": spec.get("name", ""),
        "strategy": strategy.name,
        "num_outputs": spec.get("num_outputs", ""),
        "source": Path(ckpt.get("_path", "")).name,
        # the test-time augmentation the model was chosen with: Recognizer.from_onnx defaults to it
        "tta": ((ckpt.get("config") or {}).get("eval") or {}).get("tta", "none"),
    }
    return export_model_onnx(
        model,
        strategy,
        out_path,
        class_names=ckpt["class_names"],
        normalization=ckpt["normalization"],
        opset=opset,
        metadata=extra,
        check=check,
        input=input,
    )


# -- command line -------------------------------------------------------------------------------
def add_export_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (parent-class probabilities, dynamic batch)",
        description="Export a checkpoint (or run directory, or `default`: the bundled model) to ONNX. "
        "The graph includes the strategy's sub-class -> class mapping and a softmax: input 'input' "
        "float [B, C, S, S], the face's pixels 0..255 with the training normalisation in the graph "
        "(--input pixels, default) or already normalised as in training (--input normalized); output "
        "'probabilities' [B, num_classes]. Class names, normalisation, the input kind and the "
        "checkpoint's test-time augmentation are stored in the file's metadata; `dicc predict "
        "FILE.onnx ...` uses them.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint .pt file, run directory, or 'default'")
    p.add_argument("output", metavar="OUT.onnx", nargs="?", default=None, help="write the ONNX model here")
    p.add_argument("--onnx", metavar="FILE", default=None, help="write the ONNX model here (as OUT.onnx)")
    p.add_argument(
        "--input",
        choices=INPUT_KINDS,
        default=CLI_INPUT,
        help="the graph's input: pixels 0..255 with the normalisation folded in (default), or normalized",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime vs PyTorch comparison")
    return p


def _onnx_target_problem(path: Path) -> str | None:
    """Why ``path`` cannot take the ONNX file (a folder, a name the file system cannot hold, a
    file in the way of its folder), or None; nothing is written."""
    import stat

    try:
        if stat.S_ISDIR(os.stat(path).st_mode):
            return "it is a folder; name the .onnx file to write"
    except FileNotFoundError:
        pass
    except OSError as err:
        return err.strerror or str(err)
    return None


def run_export(args) -> int:
    """``dicc export``: the checkpoint is read first (its errors name it), then the ONNX file
    written atomically; any problem writing it is one line naming it (exit 2), and a failed
    export leaves no file behind (an older one as it was)."""
    from .checkpoint import load_checkpoint

    if (args.output is None) == (getattr(args, "onnx", None) is None):
        print(
            "dicc export: error: name the ONNX file to write once: `dicc export CHECKPOINT OUT.onnx` "
            "(or --onnx OUT.onnx)",
            file=sys.stderr,
        )
        return 2
    args.onnx = args.onnx or args.output
    target = Path(args.onnx)
    problem = _onnx_target_problem(target)
    if problem is None:
        ckpt = load_checkpoint(args.checkpoint)  # a missing or bad checkpoint: main's one line naming it
        try:
            info = export_onnx(
                ckpt, target, opset=args.opset, check=not args.no_check, input=getattr(args, "input", CLI_INPUT)
            )
        except ImportError as err:
            print(f"dicc export: error: {err}", file=sys.stderr)
            return 2
        except OSError as err:  # a read-only folder, a full disk, a name too long for the file system
            problem = err.strerror or str(err)
    if problem is not None:
        print(f"dicc export: error: cannot write {args.onnx}: {problem}", file=sys.stderr)
        return 2
    diff = "not checked" if info["max_abs_diff"] is None else f"max |onnxruntime - torch| = {info['max_abs_diff']:.2g}"
    print(
        f"wrote {info['path']}: {len(info['class_names'])} class probabilities "
        f"({', '.join(info['class_names'])}) from {info['num_outputs']} head outputs; merge {info['merge']}; "
        f"input {info['input']}; {diff}"
    )
    return 0
