"""Checkpoints as plain dicts of tensors and numbers (loadable with ``weights_only=True``),
written atomically so an interrupted save never destroys the previous file."""

from __future__ import annotations

from pathlib import Path

import torch

from .atomic import atomic_path, named_os_error, save_atomic, write_text_atomic  # noqa: F401 (re-exported)

FORMAT = "dicc-checkpoint"
VERSION = 1
#: what every checkpoint holds (a training checkpoint also has optimizer, augment, rng, epoch, step)
REQUIRED_KEYS = ("model", "model_spec", "class_names", "class_counts", "normalization", "strategy")


#: the files dicc ships: the model, its card, a sample photo
ASSETS = Path(__file__).resolve().parent / "assets"
#: the model dicc ships (``default`` wherever a checkpoint is taken): see dicc/assets/MODEL_CARD.md
DEFAULT_MODEL = ASSETS / "default_model.pt"
#: its ONNX graph, where the installation has one: what ``Recognizer.load()`` and ``dicc predict``
#: run by default when onnxruntime is importable (:func:`dicc.predict.recognizer.default_model_file`)
DEFAULT_ONNX = ASSETS / "default_model.onnx"


def resolve_checkpoint(path: str | Path) -> Path:
    """``"default"`` -> the bundled model's file; anything else as a path."""
    if str(path) == "default":
        if not DEFAULT_MODEL.is_file():
            raise FileNotFoundError(
                f"the bundled model is missing from this installation ({DEFAULT_MODEL}); "
                "reinstall dicc or pass a checkpoint"
            )
        return DEFAULT_MODEL
    return Path(path)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load and sanity-check a dicc checkpoint (``weights_only=True``: no code is run); ``path``
    is a ``.pt`` file, a run directory, or ``"default"`` (the bundled model)."""
    path = resolve_checkpoint(path)
    if path.is_dir():  # a run directory
        for name in ("best.pt", "last.pt"):
            if (path / "checkpoints" / name).is_file():
                path = path / "checkpoints" / name
                break
        else:
            raise FileNotFoundError(f"{path}: no checkpoints/best.pt or checkpoints/last.pt in this run directory")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - report any unpickling problem with the file name
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"{path}: not a readable checkpoint: truncated or corrupt file? ({type(err).__name__}: {detail})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not a dicc checkpoint (missing format marker)")
    version = ckpt.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= VERSION:
        raise ValueError(
            f"{path}: checkpoint format version {version!r}; this dicc reads versions 1 to {VERSION} "
            f"(written by {'a newer' if isinstance(version, int) and version > VERSION else 'another'} "
            "dicc?)"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {', '.join(missing)} (not written by dicc, or cut short)")
    weights = ckpt["model"] if isinstance(ckpt["model"], dict) else {}
    bad = [k for k, v in weights.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise ValueError(
            f"{path}: {bad[0]}{f' (and {len(bad) - 1} more tensors)' if len(bad) > 1 else ''} holds NaN or "
            "infinite weights (written by a run that diverged?); use an earlier checkpoint"
        )
    ckpt["_path"] = str(path)
    return ckpt


def state_dict_mismatch(model: torch.nn.Module, state: dict) -> str:
    """Why ``state`` does not load into ``model``, in a few words: the first tensor of another
    shape (and how many more), the first missing and unexpected keys."""
    own = model.state_dict()
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    parts = []
    if shapes:
        k = shapes[0]
        more = f" (and {len(shapes) - 1} more tensors)" if len(shapes) > 1 else ""
        parts.append(f"{k} is {list(state[k].shape)} in the file, {list(own[k].shape)} in the model{more}")
    for what, keys in (("lacks", missing), ("has unknown", unexpected)):
        if keys:
            parts.append(f"the file {what} {keys[0]}" + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""))
    return "; ".join(parts) or "the tensors do not fit"


def model_from_checkpoint(ckpt: dict):
    """Rebuild the model and strategy stored in a checkpoint (on the CPU, in eval mode)."""
    from .models import model_from_spec
    from .strategies import create_strategy

    spec = ckpt["model_spec"]
    strategy = create_strategy(
        ckpt["strategy"]["name"], ckpt["class_counts"], ckpt["strategy"]["options"], class_names=ckpt["class_names"]
    )
    strategy.load_state_dict(ckpt["strategy"]["state"])
    if str(spec["name"]).startswith("user:"):
        raise ValueError(
            f"{ckpt.get('_path', 'checkpoint')}: holds a user-supplied model ({spec['name'][5:]}); rebuild "
            "it yourself and load ckpt['model'] into dicc.models.adapt_model(YourModule(), "
            "num_outputs) (or use the model dicc.fit returned)"
        )
    model = model_from_spec(spec)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
    except RuntimeError:
        raise ValueError(
            f"{ckpt.get('_path', 'checkpoint')}: the weights do not fit the model its model_spec describes "
            f"({spec['name']}, width {spec.get('width')}): {state_dict_mismatch(model, ckpt['model'])}"
        ) from None
    model.eval()
    tau = ((ckpt.get("config") or {}).get("eval") or {}).get("logit_adjust")
    if tau is not None:  # post-hoc logit adjustment is part of what the checkpoint predicts
        from .strategies.posthoc import with_posthoc

        strategy = with_posthoc(strategy, tau)
    return model, strategy
