"""The ``dicc`` command line: parse, build a config, call the library. Nothing else lives here."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import TTA_MODES


def _is_rank0() -> bool:
    from .distributed import is_main_process

    return is_main_process()


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (built-in data when --data is not given)")
    p.add_argument("--config", "-c", help="YAML config file (see configs/)")
    p.add_argument("--data", help="dataset root or CSV (default: the built-in synthetic data)")
    p.add_argument("--format", help="dataset format (default: auto-detect)")
    p.add_argument("--method", help="imbalance method (see `dicc methods`)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run directory (default runs/<method>-seed<seed>)")
    p.add_argument("--longtail", help="long-tailed training subset: preset, exp:IF, step:IF or one count per class")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, e.g. --set optim.lr=0.1 --set method.options.k_max=3",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _train_config(args):
    """The run config of ``dicc train``: the file (or, with ``--resume``, the run's own
    config.yaml), the ``--set`` overrides, then the typed flags; the default ``train.out``
    named after the method and seed."""
    from .config import load_config
    from .rundir import RunDirectory

    base = None
    if args.resume:  # continue from the run's own config.yaml; what is given must agree with it
        out = args.out or next((o.split("=", 1)[1] for o in args.overrides if o.startswith("train.out=")), None)
        if out is None:
            raise ValueError("--resume needs --out RUN_DIR (the run to continue)")
        saved = RunDirectory(out).saved_config()
        base = saved.to_dict() if saved is not None else None
    cfg = load_config(args.config, args.overrides, base=base)
    # the typed flags are taken literally (a path may hold '#' or ': '), after the --set overrides
    for section, key, value in (
        ("data", "path", args.data),
        ("data", "format", args.format),
        ("method", "name", args.method),
        ("train", "epochs", args.epochs),
        ("train", "seed", args.seed),
        ("train", "out", args.out),
    ):
        if value is not None:
            setattr(getattr(cfg, section), key, value)
    if args.longtail is not None:  # a preset / profile name, "n1,...,n7", or a YAML list
        cfg.data.longtail = _longtail_flag(args.longtail)
    if args.no_progress:
        cfg.train.progress = False
    if (
        args.out is None
        and not any(o.startswith("train.out=") for o in args.overrides)
        and cfg.train.out == "runs/default"
    ):
        cfg.train.out = f"runs/{cfg.method.name}-seed{cfg.train.seed}"
    if cfg.data.path is not None and not Path(cfg.data.path).exists():
        raise FileNotFoundError(f"--data: path not found: {cfg.data.path}")
    return cfg


def _longtail_flag(text: str):
    """``--longtail``: a YAML list or mapping when it looks like one, else the text as given."""
    import yaml

    from .config import yaml_error_line

    if not text.lstrip().startswith(("[", "{")):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(
            f"--longtail {text!r}: not a list or mapping ({yaml_error_line(err)}); expected e.g. "
            "[4300, 430, ...] (one count per class), {happy: 4300, ...}, 4300,430,..., exp:IF or a preset"
        ) from None


def _train(args) -> int:
    from .engine import fit
    from .rundir import RunDirectory

    cfg = _train_config(args)
    try:
        result = fit(cfg, resume=args.resume)
    except OSError as err:  # a full disk, a folder that became read-only, ...: what is kept, and how to go on
        last = RunDirectory(cfg.train.out).last
        if not _is_rank0() or not last.exists():
            raise
        raise ValueError(
            f"{os_error_line(err)}; {last} holds the last finished epoch: once fixed, continue with "
            f"dicc train --out {cfg.train.out} --resume"
        ) from None
    except KeyboardInterrupt:
        if _is_rank0():
            last = RunDirectory(cfg.train.out).last
            done = f"{last} holds the last finished epoch" if last.exists() else "no epoch had finished"
            print(
                f"dicc train: interrupted; {done}; continue with: dicc train --out {cfg.train.out} --resume",
                file=sys.stderr,
            )
        return 130
    if _is_rank0():
        print(f"run directory: {result.run_dir}")
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint (or run directory) on a dataset split")
    p.add_argument("checkpoint")
    p.add_argument("--data", help="dataset root or CSV (default: the data the run was trained on)")
    p.add_argument("--format", default="auto")
    p.add_argument(
        "--split",
        default="test",
        help="a split of the dataset, or 'holdout': the validation "
        "images the run selected its checkpoint on (rebuilt from its config)",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--confusion", help="also save the confusion matrix as this PNG")
    p.add_argument("--reliability", help="also save the reliability diagram (calibration) as this PNG")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument(
        "--tta",
        choices=TTA_MODES,
        default=None,
        help="test-time augmentation: average the probabilities over the image and its mirror (flip) "
        "or over 10 shifted and mirrored views (crops); default: the run's eval.tta",
    )


def _add_rebalance(sub) -> None:
    p = sub.add_parser(
        "rebalance",
        help="re-balance a finished run's classifier (cRT, tau-norm, post-hoc logit "
        "adjustment), chosen on its validation hold-out, into a new run directory",
    )
    p.add_argument("run_dir", help="a finished run directory")
    p.add_argument(
        "--stage",
        required=True,
        help="a stage registered in dicc.rebalance: crt (retrain the classifier on class-balanced batches), "
        "tau_norm (rescale its weights), logit_adjust (subtract tau * log prior); another name lists them",
    )
    p.add_argument("--out", required=True, help="the new run directory")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="stage option, e.g. --set epochs=5 --set tau=1.0 --set space=subclass (see dicc.rebalance)",
    )


def _rebalance(args) -> int:
    from .config import _parse_value
    from .rebalance import rebalance

    stage = {"name": args.stage}
    for item in args.overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        stage[key.strip()] = _parse_value(value)
    rebalance(args.run_dir, stage, args.out)
    print(f"run directory: {args.out}")
    return 0


def _run_data_config(ckpt: dict, data: str | None, fmt: str | None = None):
    """The data settings of the run ``ckpt`` comes from; ``--data`` (with ``--format``) replaces
    the path it recorded (data, or a run directory, that moved)."""
    from .config import DataConfig, from_dict

    dcfg = from_dict(DataConfig, (ckpt.get("config") or {}).get("data") or {})
    if data is not None:
        dcfg.path = data
        if fmt is not None:
            dcfg.format = fmt
    elif dcfg.path is not None and not Path(dcfg.path).exists():
        raise FileNotFoundError(
            f"{ckpt['_path']}: the data the run was trained on is not at {dcfg.path} (moved?); pass --data PATH"
        )
    return dcfg


def _evaluate(args) -> int:
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .config import EvalConfig, from_dict
    from .data.build import build_run_data, open_split
    from .engine import evaluate
    from .metrics import format_metrics, save_confusion_png, save_reliability_png

    if args.batch_size < 1:
        raise ValueError(f"--batch-size: expected an integer >= 1, got {args.batch_size}")
    ckpt = load_checkpoint(args.checkpoint)
    model, strategy = model_from_checkpoint(ckpt)
    dcfg = _run_data_config(ckpt, args.data, args.format)
    norm = ckpt["normalization"]
    if args.split == "holdout":
        if dcfg.val != "holdout":
            raise ValueError(
                f"{ckpt['_path']}: this run did not select on a hold-out (data.val={dcfg.val!r}); "
                "evaluate --split with a split name"
            )
        ds = build_run_data(dcfg, need_test=False).val
    else:
        ds = open_split(dcfg, args.split)
    ecfg = from_dict(EvalConfig, ckpt["config"].get("eval") or {})
    tta = args.tta or ecfg.tta
    m = evaluate(
        model,
        strategy,
        ds,
        batch_size=args.batch_size,
        mean=norm["mean"],
        std=norm["std"],
        tta=tta,
        train_counts=ckpt["class_counts"],
        shot_thresholds=ecfg.shot_thresholds,
    )
    m.update({"split": args.split, "checkpoint": ckpt["_path"], "tta": tta})
    if args.confusion:
        save_confusion_png(m["confusion_matrix"], ds.class_names, args.confusion, title=f"{args.split}")
    if args.reliability:
        save_reliability_png(m["calibration"], args.reliability, title=f"{args.split}", ece=m["ece"])
    print(json.dumps(m, indent=2) if args.json else format_metrics(m))
    return 0


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="inspect datasets")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    info = dsub.add_parser("info", help="per-class counts of a dataset")
    info.add_argument("path")
    info.add_argument("--split", help="only this split")
    info.add_argument("--format", default="auto")
    info.add_argument("--json", action="store_true")
    info.add_argument("--chart", help="save a bar chart of the counts to this PNG")
    info.add_argument(
        "--classes",
        help="label space: emotions7 (default), emotions8 (+ contempt) or a comma-separated list of class names",
    )


def _data(args) -> int:
    from .data.info import data_info, format_info, save_count_chart

    classes = args.classes
    if classes and "," in classes:
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    info = data_info(args.path, split=args.split, fmt=args.format, classes=classes)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    if args.chart:
        save_count_chart(info, args.chart)
    return 0


def _methods(args) -> int:
    import dataclasses

    from .strategies import available_strategies, option_help

    for name, cls in available_strategies().items():
        print(f"{name:<18} {cls.summary}")
        if args.verbose:  # each option, its default and what it does (its field's help)
            helps = option_help(cls.Options)
            for f in dataclasses.fields(cls.Options):
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                print(f"    {f'{f.name} = {default!r}':<28} {helps[f.name]}".rstrip())
    return 0


def _add_subclasses(sub) -> None:
    p = sub.add_parser("subclasses", help="draw the sub-classes DICC discovered (a gallery of training faces)")
    p.add_argument("run_dir", help="a DICC run directory (or checkpoint)")
    p.add_argument("--out", help="PNG to write (default RUN_DIR/subclasses.png)")
    p.add_argument("--per-subclass", type=int, default=8, help="faces per sub-class row")
    p.add_argument("--data", help="dataset root (default: the data the run was trained on)")


def _subclasses(args) -> int:
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .data.build import build_run_data
    from .engine import extract_features
    from .gallery import draw_gallery

    ckpt = load_checkpoint(args.run_dir)
    model, strategy = model_from_checkpoint(ckpt)
    last = Path(args.run_dir) / "checkpoints" / "last.pt"
    if strategy.subclasses() is None and last.is_file() and Path(ckpt["_path"]) != last:
        later = load_checkpoint(last)  # best.pt is from DICC's warm-up: the latest checkpoint may have them
        later_model, later_strategy = model_from_checkpoint(later)
        if later_strategy.subclasses() is not None:
            print(
                f"dicc subclasses: {Path(ckpt['_path']).name} (epoch {ckpt.get('epoch')}) predates DICC's first "
                f"split; drawing the sub-classes of last.pt (epoch {later.get('epoch')})"
            )
            ckpt, model, strategy = later, later_model, later_strategy
    if strategy.subclasses() is None:
        raise ValueError(
            f"{ckpt['_path']}: no sub-classes to draw (method {strategy.name!r}; DICC runs have them "
            "once the warm-up is over)"
        )
    pseudo, plan = strategy.subclasses()
    dcfg = _run_data_config(ckpt, args.data)
    train = build_run_data(dcfg, need_test=False).train
    if len(train) != len(pseudo):
        raise ValueError(
            f"{ckpt['_path']}: the run's pseudo-labels cover {len(pseudo)} images but the "
            f"training data rebuilt from its config has {len(train)}"
        )
    norm = ckpt["normalization"]
    feats, labels = extract_features(model, train, mean=norm["mean"], std=norm["std"])
    run_dir = Path(args.run_dir if Path(args.run_dir).is_dir() else Path(ckpt["_path"]).parent.parent)
    out = Path(args.out) if args.out else run_dir / "subclasses.png"
    draw_gallery(
        train.get_batch(range(len(train))),
        feats,
        labels,
        pseudo,
        plan,
        list(train.class_names),
        out,
        per_subclass=args.per_subclass,
    )
    print(f"wrote {out}")
    return 0


def _predict(args) -> int:
    from .predict import run_predict

    return run_predict(args)


def _export(args) -> int:
    from .export import run_export

    return run_export(args)


def _serve(args) -> int:
    from .serve import run_serve

    return run_serve(args)


def _compare(args) -> int:
    from .compare import run_compare

    return run_compare(args)


COMMANDS = {
    "train": _train,
    "evaluate": _evaluate,
    "data": _data,
    "methods": _methods,
    "subclasses": _subclasses,
    "compare": _compare,
    "predict": _predict,
    "export": _export,
    "serve": _serve,
    "rebalance": _rebalance,
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="dicc",
        description="Facial expression recognition on class-imbalanced "
        "data with Dynamic Intra-Class Clustering (DICC).",
    )
    parser.add_argument("--version", action="version", version=f"dicc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_rebalance(sub)
    _add_data(sub)
    _add_subclasses(sub)
    from .compare import add_compare_parser

    add_compare_parser(sub)
    from .export import add_export_parser
    from .predict import add_predict_parser

    add_predict_parser(sub)
    add_export_parser(sub)
    from .serve import add_serve_parser

    add_serve_parser(sub)
    m = sub.add_parser("methods", help="list the registered imbalance methods")
    m.add_argument("--verbose", "-v", action="store_true", help="also list each method's options")
    return parser


def _configure_logging():
    """The library logs through ``logging.getLogger("dicc")``; the CLI shows INFO lines on
    stdout as plain text (rank 0 only under torchrun). Returns a function that puts the logger
    back as it was (``main`` called in-process, e.g. from a notebook, leaves no handler behind)."""
    import logging

    class StdoutHandler(logging.StreamHandler):
        """Writes to whatever ``sys.stdout`` is at the time (it may be replaced, e.g. by pytest)."""

        @property
        def stream(self):
            return sys.stdout

        @stream.setter
        def stream(self, value):
            pass

    logger = logging.getLogger("dicc")
    saved = (list(logger.handlers), logger.level, logger.propagate)

    def restore() -> None:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]

    if not any(getattr(h, "_dicc_cli", False) for h in logger.handlers):
        handler = StdoutHandler()
        handler._dicc_cli = True
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.INFO if _is_rank0() else logging.WARNING)
    return restore


#: what to do about an OS error, by errno name (the path and the system's words come first)
_OS_HINTS = {
    "ENOSPC": "free some space or choose another location",
    "EDQUOT": "free some space or choose another location",
    "EACCES": "not writable (or readable) by this user: choose another location",
    "EPERM": "not writable (or readable) by this user: choose another location",
    "EROFS": "choose a location on a writable file system",
    "ENAMETOOLONG": "file systems allow at most 255 bytes per name",
    "EEXIST": "choose a name that does not exist yet",
    "ENOTDIR": "a part of the path is a file, not a folder",
    "EISDIR": "expected a file, got a folder",
}


def os_error_line(err: OSError) -> str:
    """An OS error as one line naming the path: ``PATH: No space left on device (free some
    space or choose another location)``. An error dicc raised itself keeps its message."""
    if err.errno is None or err.filename is None:
        return str(err.args[0] if len(err.args) == 1 else err)
    import errno

    where = f"{err.filename}" + (f" -> {err.filename2}" if getattr(err, "filename2", None) else "")
    hint = _OS_HINTS.get(errno.errorcode.get(err.errno, ""))
    return f"{where}: {err.strerror}" + (f" ({hint})" if hint else "")


def _restore_sigint() -> None:
    """Ctrl-C raises KeyboardInterrupt: a process started from a shell's background job (and by
    some CI runners) inherits SIGINT as ignored, and Python then never raises it."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) in (
        signal.SIG_IGN,
        signal.SIG_DFL,
    ):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    _restore_sigint()
    parser = build_parser()
    args = parser.parse_args(argv)
    restore_logging = _configure_logging()
    from .runlock import RunDirectoryBusy

    try:
        return COMMANDS[args.command](args)
    except (ValueError, KeyError, FloatingPointError, RunDirectoryBusy, OSError) as err:
        if isinstance(err, OSError):
            msg = os_error_line(err)
        else:
            msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        if _is_rank0():
            print(f"dicc {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if _is_rank0():
            print(f"dicc {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        restore_logging()


if __name__ == "__main__":
    sys.exit(main())
