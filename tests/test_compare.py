"""dicc compare: grid parsing and validation, skip/resume logic, and the report."""

import argparse
import csv
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import dicc.compare as compare
from dicc.compare import add_compare_parser, load_grid, plan_runs, run_compare, run_grid, write_report

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
COUNTS = [280, 40, 360, 1200, 600, 200, 900]
REPO = Path(__file__).resolve().parents[1]


def _final(rng, acc=None):
    recall = rng.uniform(0.1, 0.9, size=len(CLASSES))
    return {
        "accuracy": float(rng.uniform(0.3, 0.7) if acc is None else acc),
        "mean_class_accuracy": float(recall.mean()),
        "macro_f1": float(rng.uniform(0.2, 0.6)),
        "per_class": {
            c: {"precision": 0.5, "recall": float(r), "f1": 0.5, "support": 100} for c, r in zip(CLASSES, recall)
        },
        "confusion_matrix": rng.integers(0, 20, size=(7, 7)).tolist(),
        "num_samples": 700,
        "epoch": 2,
        "best_val_mean_class_accuracy": float(rng.uniform(0.2, 0.8)),
    }


def make_run(run_dir: Path, final: dict | None, epoch_times=(1.5, 2.25), counts=COUNTS, last=True):
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for e, t in enumerate(epoch_times, 1):
            f.write(json.dumps({"epoch": e, "train_loss": 1.0, "time_epoch": t}) + "\n")
            f.write(json.dumps({"event": "recluster", "epoch": e}) + "\n")  # a strategy event: no time
    if last:
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        torch.save(
            {"format": "dicc-checkpoint", "class_counts": list(counts), "epoch": len(epoch_times)},
            run_dir / "checkpoints" / "last.pt",
        )
    if final is not None:
        (run_dir / "final.json").write_text(json.dumps(final))


def _table(md: str, setting: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header cells and {method: cells} of the Markdown table under '## setting'."""
    section = md.split(f"## {setting}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[cells[0]] = cells
    return head, rows


def _fmt(values):
    v = 100 * np.asarray(values, dtype=float)
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


# ---------------------------------------------------------------------------------------------
def test_report_mean_std_bold_and_csv(tmp_path):
    rng = np.random.default_rng(0)
    out = tmp_path / "out"
    finals = {}
    for setting in ("if100", "if10"):
        for method in ("ce", "ce+posthoc_la"):
            for seed in (0, 1, 2):
                finals[setting, method, seed] = f = _final(rng)
                make_run(out / setting / method / f"seed{seed}", f, epoch_times=(1.5, 2.25, 0.25))
    make_run(out / "if100" / "ce" / "seed3", None)  # unfinished: not in the report
    paths = write_report(out, command="dicc compare grid.yaml")
    assert paths["runs"] == 12

    # results.csv: one row per finished run, the documented columns
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    assert list(rows[0])[:7] == [
        "setting",
        "method",
        "seed",
        "val_mean_class_accuracy",
        "accuracy",
        "mean_class_accuracy",
        "macro_f1",
    ]
    assert [k for k in rows[0] if k.startswith("recall_")] == [f"recall_{c}" for c in CLASSES]
    assert {"train_time_s", "epochs"} <= set(rows[0])
    r = next(r for r in rows if (r["setting"], r["method"], r["seed"]) == ("if10", "ce+posthoc_la", "1"))
    f = finals["if10", "ce+posthoc_la", 1]
    assert float(r["accuracy"]) == pytest.approx(f["accuracy"])
    assert float(r["recall_fear"]) == pytest.approx(f["per_class"]["fear"]["recall"])
    assert float(r["train_time_s"]) == pytest.approx(4.0) and r["epochs"] == "3"

    # results.md: mean ± sample std in %, best mean in bold, classes by training count
    md = (out / "results.md").read_text()
    assert "dicc compare grid.yaml" in md
    order = [c for _, c in sorted(zip(COUNTS, CLASSES), key=lambda t: -t[0])]
    for setting in ("if100", "if10"):
        head, table = _table(md, setting)
        assert head[:6] == ["method", "n", "val mean class acc.", "accuracy", "mean class acc.", "macro-F1"]
        assert head[6:] == [f"recall {c}" for c in order]
        assert set(table) == {"ce", "ce+posthoc_la"}
        keys = ["best_val_mean_class_accuracy", "accuracy", "mean_class_accuracy", "macro_f1"] + order
        means = {}
        for method, cells in table.items():
            assert cells[1] == "3"
            for key, cell in zip(keys, cells[2:]):
                vals = [
                    finals[setting, method, s][key]
                    if key in finals[setting, method, s]
                    else finals[setting, method, s]["per_class"][key]["recall"]
                    for s in range(3)
                ]
                assert cell.strip("*") == _fmt(vals), (setting, method, key)
                means[method, key] = round(100 * np.mean(vals), 2)
        for i, key in enumerate(keys):
            best = max(means[m, key] for m in table)
            for method, cells in table.items():
                assert cells[2 + i].startswith("**") == (means[method, key] == best), (setting, method, key)
    assert (out / "recall_if100.png").stat().st_size > 1000
    assert (out / "recall_if10.png").is_file() and (out / "confusion_if10.png").is_file()


def test_report_single_seed_and_empty(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert write_report(out)["runs"] == 0
    assert "No finished runs" in (out / "results.md").read_text()
    f = _final(np.random.default_rng(1), acc=0.5)
    make_run(out / "default" / "ce" / "seed0", f, last=False)  # no checkpoint: natural class order
    write_report(out)
    head, table = _table((out / "results.md").read_text(), "default")
    assert head[6:] == [f"recall {c}" for c in CLASSES]
    assert table["ce"][3] == "**50.00**"  # n=1: no ± and still the best


# ---------------------------------------------------------------------------------------------
def _grid(tmp_path, **kw):
    g = {
        "out": str(tmp_path / "out"),
        "base": {"train": {"epochs": 2}, "model": {"width": 4}},
        "methods": [
            "ce",
            {
                "label": "ce+posthoc_la",
                "name": "logit_adjust",
                "options": {"mode": "posthoc"},
                "set": ["optim.lr=0.02"],
            },
        ],
        "seeds": [0, 1],
    }
    g.update(kw)
    return g


@pytest.fixture
def fake_fit(monkeypatch):
    calls = []

    def fit(cfg, *, resume=False, log=print):
        calls.append((cfg, resume))
        run = Path(cfg.train.out)
        make_run(run, _final(np.random.default_rng(cfg.train.seed)))
        return None

    monkeypatch.setattr(compare.run, "fit", fit)
    return calls


def test_plan_builds_configs(tmp_path):
    g = load_grid(
        _grid(tmp_path, settings={"if100": ["data.longtail=fer2013-if100"], "if10": ["data.longtail=exp:10"]})
    )
    runs = plan_runs(g)
    assert [r.name for r in runs][:3] == ["if100/ce/seed0", "if100/ce/seed1", "if100/ce+posthoc_la/seed0"]
    assert len(runs) == 8
    r = next(r for r in runs if r.name == "if10/ce+posthoc_la/seed1")
    assert r.run_dir == tmp_path / "out" / "if10" / "ce+posthoc_la" / "seed1"
    assert r.cfg.train.out == str(r.run_dir) and r.cfg.train.seed == 1 and r.cfg.train.epochs == 2
    assert r.cfg.method.name == "logit_adjust" and r.cfg.method.options == {"mode": "posthoc"}
    assert r.cfg.optim.lr == 0.02 and r.cfg.data.longtail == "exp:10" and r.cfg.model.width == 4
    ce = next(r for r in runs if r.name == "if10/ce/seed1")
    assert ce.cfg.optim.lr == 0.05 and ce.cfg.method.name == "ce"
    assert [r.name for r in plan_runs(g, only=["ce"], settings=["if10"])] == ["if10/ce/seed0", "if10/ce/seed1"]
    assert [r.name for r in plan_runs(g, settings=["if10"], seeds=[1])] == ["if10/ce/seed1", "if10/ce+posthoc_la/seed1"]
    # no settings: one setting called "default"
    assert plan_runs(load_grid(_grid(tmp_path)))[0].name == "default/ce/seed0"


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"method": ["ce"]}, "unknown key(s) method; valid: base, methods, out, seeds, settings"),
        (
            {"methods": [{"name": "ce", "lable": "x"}]},
            "methods[0]: unknown key(s) lable; valid: label, name, options, set",
        ),
        ({"methods": [{"label": "x"}]}, "needs 'name'"),
        ({"methods": ["ce", "ce"]}, "duplicate method label(s) ce"),
        ({"methods": [{"name": "ce", "label": "a/b"}]}, "no slashes"),
        ({"seeds": []}, "seeds must be a non-empty list"),
        ({"seeds": [0, "one"]}, "seeds must be a non-empty list"),
        ({"out": None}, "'out' is required"),
        ({"settings": {"x": "data.longtail"}}, "settings.x: expected a list of dotted overrides"),
        ({"settings": {"x": ["method.name=focal"]}}, "the method is set per entry"),
    ],
)
def test_grid_structure_errors(tmp_path, change, fragment):
    with pytest.raises(ValueError) as err:
        load_grid(_grid(tmp_path, **change))
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"methods": ["ce", "dicc_typo"]}, "method entry 'dicc_typo': unknown method 'dicc_typo'; valid: "),
        ({"methods": [{"name": "logit_adjust", "options": {"tua": 1}}]}, "unknown option(s) tua; valid: mode, tau"),
        ({"methods": [{"name": "logit_adjust", "options": {"mode": "later"}}]}, "logit_adjust"),
        ({"base": {"train": {"epoch": 3}}}, "unknown key(s) in train: epoch"),
        ({"methods": [{"name": "ce", "set": ["optim.lrr=1"]}]}, "run default/ce/seed0: unknown key(s) in optim: lrr"),
    ],
)
def test_unknown_methods_and_keys_fail_before_training(tmp_path, fake_fit, change, fragment):
    with pytest.raises(ValueError) as err:
        run_grid(_grid(tmp_path, **change), log=lambda *a: None)
    assert fragment in str(err.value)
    assert fake_fit == [] and not (tmp_path / "out").exists()


def test_filters_must_name_grid_entries(tmp_path, fake_fit):
    with pytest.raises(ValueError, match="--only: method label.*nope.*valid: ce, ce\\+posthoc_la"):
        run_grid(_grid(tmp_path), only=["nope"], log=lambda *a: None)
    with pytest.raises(ValueError, match="--setting"):
        run_grid(_grid(tmp_path), settings=["if5"], log=lambda *a: None)
    with pytest.raises(ValueError, match="--seed: seed.*7 not in the grid; valid: 0, 1"):
        run_grid(_grid(tmp_path), seeds=[7], log=lambda *a: None)


def test_training_counts_from_final_json_without_checkpoints(tmp_path):
    """A run directory kept without its checkpoints (as the committed benchmark records are)
    still orders the report's classes by training count."""
    rng = np.random.default_rng(3)
    out = tmp_path / "out"
    for seed in range(2):
        f = _final(rng)
        f["train_class_counts"] = COUNTS
        make_run(out / "default" / "ce" / f"seed{seed}", f, last=False)
    assert compare.train_counts(out / "default" / "ce" / "seed0") == COUNTS
    write_report(out)
    md = (out / "results.md").read_text()
    assert "Training counts: happy 1200, neutral 900, sad 600, fear 360, angry 280, surprise 200, disgust 40." in md


def test_grid_file_and_base_file(tmp_path):
    (tmp_path / "base.yaml").write_text("train: {epochs: 7}\n")
    f = tmp_path / "grid.yaml"
    f.write_text(f"out: {tmp_path / 'o'}\nbase: base.yaml\nmethods: [ce]\nseeds: 3\n")
    g = load_grid(f)
    assert g.path == f and g.seeds == [3] and g.command == f"dicc compare {f}"
    assert plan_runs(g)[0].cfg.train.epochs == 7
    with pytest.raises(FileNotFoundError, match="grid file not found"):
        load_grid(tmp_path / "missing.yaml")


def test_skip_and_resume(tmp_path, fake_fit):
    grid = _grid(tmp_path)
    logs = []
    out = run_grid(grid, log=logs.append)
    assert len(fake_fit) == 4 and not any(resume for _, resume in fake_fit)
    assert out.ok and len(out.trained) == 4 and out.skipped == []
    assert {Path(cfg.train.out).relative_to(tmp_path / "out").as_posix() for cfg, _ in fake_fit} == {
        "default/ce/seed0",
        "default/ce/seed1",
        "default/ce+posthoc_la/seed0",
        "default/ce+posthoc_la/seed1",
    }
    assert (tmp_path / "out" / "results.csv").is_file() and (tmp_path / "out" / "compare.json").is_file()
    assert any("dicc compare" in line for line in logs)

    # a second invocation trains nothing
    fake_fit.clear()
    out = run_grid(grid, log=lambda *a: None)
    assert fake_fit == [] and len(out.skipped) == 4

    # an interrupted run (last.pt, no final.json) is resumed; a fresh seed is trained from scratch
    partial = tmp_path / "out" / "default" / "ce" / "seed1"
    (partial / "final.json").unlink()
    grid["seeds"] = [0, 1, 2]
    run_grid(grid, log=lambda *a: None)
    assert [(Path(c.train.out).relative_to(tmp_path / "out").as_posix(), r) for c, r in fake_fit] == [
        ("default/ce/seed1", True),
        ("default/ce/seed2", False),
        ("default/ce+posthoc_la/seed2", False),
    ]
    with open(tmp_path / "out" / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 6


def test_a_run_another_compare_process_holds_or_finished_is_left_to_it(tmp_path, fake_fit, capsys, monkeypatch):
    """Two `dicc compare` workers on one grid: a run whose directory the other holds
    is skipped in one line and its files are untouched; a run the other finished after this
    worker planned the grid is not trained again."""
    from dicc.cli import main
    from helpers import held_by_another_process

    grid = tmp_path / "grid.yaml"
    grid.write_text(json.dumps(_grid(tmp_path)))
    root = tmp_path / "out" / "default"
    held, done = root / "ce" / "seed0", root / "ce+posthoc_la" / "seed0"
    make_run(held, None)  # the other worker's run in progress
    real = compare.run.fit

    def fit_then_the_other_finishes(cfg, **k):  # meanwhile the other worker finishes `done`
        real(cfg, **k)
        if not (done / "final.json").exists():
            make_run(done, _final(np.random.default_rng(9)))

    monkeypatch.setattr(compare.run, "fit", fit_then_the_other_finishes)
    with held_by_another_process(held) as other:
        before = sorted((p.relative_to(held), p.read_bytes()) for p in held.rglob("*") if p.is_file())
        assert main(["compare", str(grid)]) == 0
    text = capsys.readouterr().out
    trained = sorted(Path(c.train.out).relative_to(root).as_posix() for c, _ in fake_fit)
    assert trained == ["ce+posthoc_la/seed1", "ce/seed1"]
    assert f"default/ce/seed0: skipped: {held}: process {other.pid} is using this run directory" in text
    assert "default/ce+posthoc_la/seed0: finished meanwhile by another process" in text
    assert sorted((p.relative_to(held), p.read_bytes()) for p in held.rglob("*") if p.is_file()) == before


def test_failures_stop_or_keep_going(tmp_path, monkeypatch):
    def broken(cfg, *, resume=False, log=print):
        if cfg.train.seed == 0:
            raise FloatingPointError("the loss became nan")
        make_run(Path(cfg.train.out), _final(np.random.default_rng(0)))

    monkeypatch.setattr(compare.run, "fit", broken)
    with pytest.raises(FloatingPointError):
        run_grid(_grid(tmp_path), log=lambda *a: None)
    out = run_grid(_grid(tmp_path), keep_going=True, log=lambda *a: None)
    assert not out.ok and set(out.failed) == {"default/ce/seed0", "default/ce+posthoc_la/seed0"}
    assert out.report["runs"] == 2


def test_dry_run_and_cli(tmp_path, fake_fit, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(json.dumps(_grid(tmp_path)))
    make_run(tmp_path / "out" / "default" / "ce" / "seed0", _final(np.random.default_rng(0)))
    make_run(tmp_path / "out" / "default" / "ce" / "seed1", None)
    parser = argparse.ArgumentParser(prog="dicc")
    add_compare_parser(parser.add_subparsers(dest="command"))

    from dicc.cli import main

    assert main(["compare", str(grid), "--dry-run"]) == 0  # the status lines are the CLI's INFO log
    text = capsys.readouterr().out
    assert fake_fit == []
    assert re.search(r"default/ce/seed0\s+done", text)
    assert re.search(r"default/ce/seed1\s+partial \(2/2 epochs; will resume\)", text)
    assert re.search(r"default/ce\+posthoc_la/seed0\s+pending", text)

    assert run_compare(parser.parse_args(["compare", str(grid), "--report-only"])) == 0
    text = capsys.readouterr().out
    assert fake_fit == [] and f"dicc compare {grid}" in text
    assert f"`dicc compare {grid}`" in (tmp_path / "out" / "results.md").read_text()

    assert (
        run_compare(parser.parse_args(["compare", str(grid), "--only", "ce+posthoc_la", "--set", "train.device=cpu"]))
        == 0
    )
    assert [(c.method.name, c.train.seed, r, c.train.device) for c, r in fake_fit] == [
        ("logit_adjust", 0, False, "cpu"),
        ("logit_adjust", 1, False, "cpu"),
    ]


def test_smoke_grid_is_valid():
    from dicc.strategies import available_strategies

    g = load_grid(REPO / "configs" / "compare-smoke.yaml")
    assert {m.name for m in g.methods} <= set(available_strategies())
    runs = plan_runs(g)
    assert len(runs) == len(g.methods) * len(g.seeds) and runs[0].cfg.data.path is None


# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_end_to_end_tiny_grid(tmp_path, monkeypatch):
    """2 methods x 2 seeds, 1 epoch, width 4, on the built-in data, through the real engine."""
    import functools

    import dicc.data.synthetic as synthetic

    # the four runs draw the same synthetic splits: render them once
    monkeypatch.setattr(synthetic, "make_synthetic", functools.lru_cache(maxsize=None)(synthetic.make_synthetic))
    grid = {
        "out": str(tmp_path / "out"),
        "base": {
            "train": {"epochs": 1, "progress": False, "batch_size": 64},
            "model": {"width": 4},
            "data": {"image_size": 24, "longtail": [30, 10, 30, 60, 40, 20, 50]},
        },
        "methods": ["ce", {"label": "ce+posthoc_la", "name": "logit_adjust", "options": {"mode": "posthoc"}}],
        "seeds": [0, 1],
    }
    t0 = time.perf_counter()
    out = run_grid(grid, log=lambda *a: None)
    assert out.ok and len(out.trained) == 4
    with open(tmp_path / "out" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(r["epochs"] == "1" and float(r["train_time_s"]) > 0 for r in rows)
    assert len([k for k in rows[0] if k.startswith("recall_")]) == 7
    md = (tmp_path / "out" / "results.md").read_text()
    head, table = _table(md, "default")
    assert set(table) == {"ce", "ce+posthoc_la"} and all(cells[1] == "2" for cells in table.values())
    # classes ordered by the real training counts (read from the checkpoints), most frequent first
    assert "Training counts: happy 60, neutral 50, sad 40, angry 30, fear 30, surprise 20, disgust 10." in md
    assert head[6] == "recall happy" and head[-1] == "recall disgust"
    assert (tmp_path / "out" / "recall_default.png").is_file()
    for r in rows:
        assert (Path(r["run_dir"]) / "confusion_test.png").is_file()
    # everything finished: a second invocation trains nothing
    assert run_grid(grid, log=lambda *a: None).trained == []
    print(f"end-to-end grid: {time.perf_counter() - t0:.1f}s")


def test_recall_chart_gives_every_method_its_own_colour(tmp_path, monkeypatch):
    # 12 methods: more than the default colour cycle (10) holds
    methods = [f"m{j}" for j in range(12)]
    classes = ["happy", "fear", "disgust"]
    summ = {m: {"n": 3, **{f"recall_{c}": (0.1 * (j % 9 + 1), 0.01) for c in classes}} for j, m in enumerate(methods)}
    plt = compare.charts._plt()
    figs = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figs.append(fig), real_close(fig)))
    compare.save_recall_chart(summ, methods, classes, [100, 10, 1], tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000
    bars = figs[0].axes[0].containers
    bars = [c for c in bars if hasattr(c, "patches")]
    assert len(bars) == 12 and all(len(c.patches) == 3 for c in bars)
    colours = {tuple(c.patches[0].get_facecolor()) for c in bars}
    assert len(colours) == 12


# ---------------------------------------------------------------------------------------------
# Records of a resumed run
def test_resumed_run_records_counted_once(tmp_path):
    """A run killed and resumed repeats the records of the epoch it redid (and may end in a line cut
    short): the report counts each epoch's time once (the last record) and each event once."""
    run = tmp_path / "out" / "default" / "ce" / "seed0"
    make_run(run, _final(np.random.default_rng(0)), epoch_times=(1.0, 2.0))
    with open(run / "metrics.jsonl", "a") as f:  # the resumed run redoes epoch 2, then epoch 3
        f.write(json.dumps({"event": "recluster", "epoch": 2, "round": 2}) + "\n")
        f.write(json.dumps({"epoch": 2, "train_loss": 0.5, "time_epoch": 4.0}) + "\n")
        f.write(json.dumps({"epoch": 3, "train_loss": 0.4, "time_epoch": 8.0}) + "\n")
        f.write('{"epoch": 4, "train_lo')
    recs = compare.read_metrics(run)
    assert [(r.get("event"), r["epoch"]) for r in recs] == [
        (None, 1),
        ("recluster", 1),
        ("recluster", 2),
        (None, 2),
        (None, 3),
    ]
    assert next(r for r in recs if r.get("event") == "recluster" and r["epoch"] == 2)["round"] == 2  # the last
    assert {e: r["time_epoch"] for e, r in compare.epoch_records(run).items()} == {1: 1.0, 2: 4.0, 3: 8.0}
    row = compare.collect_results(tmp_path / "out")[0]
    assert row["train_time_s"] == pytest.approx(13.0) and row["epochs"] == 3
    assert compare.read_metrics(tmp_path / "missing") == []


# ---------------------------------------------------------------------------------------------
# Derived entries: a second stage applied to another entry's finished runs
STAGE = {"name": "crt", "epochs": 5}


def _derived_grid(tmp_path, **kw):
    g = _grid(
        tmp_path,
        methods=[
            {"label": "ce+crt", "after": "ce", "stage": dict(STAGE)},
            "ce",
            {"label": "ce+crt+tau", "after": "ce+crt", "stage": {"name": "tau_norm"}},
        ],
    )
    g.update(kw)
    return g


@pytest.fixture
def fake_rebalance(monkeypatch):
    """dicc.rebalance.rebalance's contract: (parent run dir, stage dict, out dir, log=) -> final metrics,
    writing a run directory with final.json, config.yaml and metrics.jsonl."""
    calls = []

    def rebalance(parent_run_dir, stage, out, *, log=print):
        assert (Path(parent_run_dir) / "final.json").is_file(), "a derived run starts from a finished parent"
        calls.append((Path(parent_run_dir), stage, Path(out)))
        final = _final(np.random.default_rng(len(calls)))
        make_run(Path(out), final, epoch_times=(0.5,), last=False)
        (Path(out) / "config.yaml").write_text(
            (Path(parent_run_dir) / "config.yaml").read_text()
            if (Path(parent_run_dir) / "config.yaml").is_file()
            else "{}\n"
        )
        return final

    monkeypatch.setattr(compare.run, "rebalance", rebalance)
    return calls


def _rel(tmp_path, paths):
    return [Path(p).relative_to(tmp_path / "out").as_posix() for p in paths]


def test_derived_entries_are_planned_after_their_parent(tmp_path):
    g = load_grid(_derived_grid(tmp_path))
    assert [(m.label, m.derived) for m in g.methods] == [("ce+crt", True), ("ce", False), ("ce+crt+tau", True)]
    runs = plan_runs(g)
    # the derived entry stands first in the file but runs after the runs it is made from
    assert [r.name for r in runs] == [
        "default/ce/seed0",
        "default/ce/seed1",
        "default/ce+crt/seed0",
        "default/ce+crt/seed1",
        "default/ce+crt+tau/seed0",
        "default/ce+crt+tau/seed1",
    ]
    crt = runs[3]
    assert crt.cfg is None and crt.run_dir == tmp_path / "out" / "default" / "ce+crt" / "seed1"
    assert crt.derived.parent == tmp_path / "out" / "default" / "ce" / "seed1" and crt.derived.stage == STAGE
    assert crt.parent_name == "default/ce/seed1" and runs[5].derived.parent == crt.run_dir
    # --only a derived entry plans that entry only
    assert [r.name for r in plan_runs(g, only=["ce+crt"], seeds=[0])] == ["default/ce+crt/seed0"]
    # the normalised grid (compare.json) loads back to the same entries
    assert load_grid(g.to_dict()).methods == g.methods


@pytest.mark.parametrize(
    "methods, fragment",
    [
        (
            ["ce", {"label": "x", "after": "cee", "stage": STAGE}],
            "methods[1] (x): after: 'cee' is not a method entry of this grid; labels: ce, x",
        ),
        (
            ["ce", {"label": "a", "after": "b", "stage": STAGE}, {"label": "b", "after": "nope", "stage": STAGE}],
            "methods[1] (a): after: 'nope' is not a method entry of this grid (through a -> b)",
        ),
        (
            ["ce", {"label": "a", "after": "b", "stage": STAGE}, {"label": "b", "after": "a", "stage": STAGE}],
            "methods[1] (a): after: a cycle a -> b -> a",
        ),
        (["ce", {"label": "a", "after": "a", "stage": STAGE}], "a cycle a -> a"),
        (
            ["ce", {"label": "x", "after": "ce", "stage": STAGE, "options": {"tau": 1}}],
            "methods[1]: a derived entry (with 'after') takes no options",
        ),
        (["ce", {"label": "x", "after": "ce"}], "methods[1]: a derived entry needs 'stage'"),
        (["ce", {"after": "ce", "stage": STAGE}], "methods[1]: a derived entry needs 'label'"),
        (
            ["ce", {"label": "x", "after": "ce", "stage": {"epochs": 5}}],
            "methods[1] (x): stage must be a mapping with a 'name'",
        ),
        (
            ["ce", {"label": "x", "after": "ce", "stage": STAGE, "stgae": 1}],
            "unknown key(s) stgae; valid: label, after, stage",
        ),
    ],
)
def test_derived_entry_errors_name_the_entry(tmp_path, methods, fragment):
    with pytest.raises(ValueError) as err:
        load_grid(_grid(tmp_path, methods=methods))
    assert fragment in str(err.value)


def test_derived_runs_follow_their_parents(tmp_path, fake_fit, fake_rebalance):
    out = run_grid(_derived_grid(tmp_path), log=lambda *a: None)
    assert out.ok and _rel(tmp_path, [c.train.out for c, _ in fake_fit]) == ["default/ce/seed0", "default/ce/seed1"]
    assert [(_rel(tmp_path, [p, o]), s) for p, s, o in fake_rebalance] == [
        (["default/ce/seed0", "default/ce+crt/seed0"], STAGE),
        (["default/ce/seed1", "default/ce+crt/seed1"], STAGE),
        (["default/ce+crt/seed0", "default/ce+crt+tau/seed0"], {"name": "tau_norm"}),
        (["default/ce+crt/seed1", "default/ce+crt+tau/seed1"], {"name": "tau_norm"}),
    ]
    record = json.loads((tmp_path / "out" / "default" / "ce+crt" / "seed0" / "stage.json").read_text())
    assert record == {"after": "ce", "parent": str(tmp_path / "out" / "default" / "ce" / "seed0"), "stage": STAGE}
    # the report: derived entries are ordinary rows, in the grid's order
    _, table = _table((tmp_path / "out" / "results.md").read_text(), "default")
    assert list(table) == ["ce+crt", "ce", "ce+crt+tau"] and all(cells[1] == "2" for cells in table.values())
    with open(tmp_path / "out" / "results.csv") as f:
        assert sorted({r["method"] for r in csv.DictReader(f)}) == ["ce", "ce+crt", "ce+crt+tau"]

    # finished: nothing again; an interrupted derived run (no final.json) is redone from its parent
    fake_fit.clear(), fake_rebalance.clear()
    assert (
        len(run_grid(_derived_grid(tmp_path), report=False, log=lambda *a: None).skipped) == 6 and fake_rebalance == []
    )
    (tmp_path / "out" / "default" / "ce+crt+tau" / "seed1" / "final.json").unlink()
    (tmp_path / "out" / "default" / "ce+crt+tau" / "seed1" / "checkpoints").mkdir()
    (tmp_path / "out" / "default" / "ce+crt+tau" / "seed1" / "checkpoints" / "last.pt").write_bytes(b"")
    out = run_grid(_derived_grid(tmp_path), report=False, log=lambda *a: None)
    assert out.trained == ["default/ce+crt+tau/seed1"] and out.resumed == [] and fake_fit == []
    assert _rel(tmp_path, [fake_rebalance[0][0]]) == ["default/ce+crt/seed1"]


def test_only_a_derived_entry_needs_finished_parents(tmp_path, fake_fit, fake_rebalance, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(json.dumps(_derived_grid(tmp_path)))
    parser = argparse.ArgumentParser(prog="dicc")
    add_compare_parser(parser.add_subparsers(dest="command"))
    # the dry run lists each derived run with its parent run and the parent's status
    from dicc.cli import main

    assert main(["compare", str(grid), "--dry-run"]) == 0  # the status lines are the CLI's INFO log
    text = capsys.readouterr().out
    assert re.search(r"default/ce\+crt/seed0\s+pending \(after default/ce/seed0: pending\)", text)
    assert re.search(r"default/ce\+crt\+tau/seed1\s+pending \(after default/ce\+crt/seed1: pending\)", text)
    assert main(["compare", str(grid), "--dry-run", "--only", "ce+crt"]) == 0
    assert re.search(
        r"default/ce\+crt/seed0\s+pending \(after default/ce/seed0: pending, not selected\)", capsys.readouterr().out
    )

    # parents neither finished nor selected: nothing runs, the error names what is missing
    with pytest.raises(
        ValueError,
        match=r"default/ce\+crt/seed0 \(after default/ce/seed0: pending\); "
        r"default/ce\+crt/seed1 \(after default/ce/seed1: pending\).*\(--only ce\)",
    ):
        run_compare(parser.parse_args(["compare", str(grid), "--only", "ce+crt"]))
    assert fake_fit == [] and fake_rebalance == [] and not (tmp_path / "out").exists()
    # selected with their parents, or once the parents are finished, they run
    assert (
        run_compare(
            parser.parse_args(["compare", str(grid), "--only", "ce", "--only", "ce+crt", "--seed", "0", "--no-report"])
        )
        == 0
    )
    assert len(fake_fit) == 1 and _rel(tmp_path, [fake_rebalance[0][2]]) == ["default/ce+crt/seed0"]
    fake_fit.clear()
    assert (
        run_compare(parser.parse_args(["compare", str(grid), "--only", "ce+crt+tau", "--seed", "0", "--no-report"]))
        == 0
    )
    assert fake_fit == [] and _rel(tmp_path, [fake_rebalance[-1][2]]) == ["default/ce+crt+tau/seed0"]


def test_derived_run_of_a_failed_parent_fails(tmp_path, monkeypatch, fake_rebalance):
    def broken(cfg, *, resume=False, log=print):
        if cfg.train.seed == 0:
            raise FloatingPointError("the loss became nan")
        make_run(Path(cfg.train.out), _final(np.random.default_rng(0)))

    monkeypatch.setattr(compare.run, "fit", broken)
    grid = _grid(tmp_path, methods=["ce", {"label": "ce+crt", "after": "ce", "stage": STAGE}])
    out = run_grid(grid, keep_going=True, report=False, log=lambda *a: None)
    assert set(out.failed) == {"default/ce/seed0", "default/ce+crt/seed0"}
    assert "parent run default/ce/seed0 is not finished (it failed above)" in out.failed["default/ce+crt/seed0"]
    assert out.trained == ["default/ce/seed1", "default/ce+crt/seed1"] and len(fake_rebalance) == 1


def test_derived_config_differences_compare_stage_and_parent(tmp_path, fake_fit, fake_rebalance):
    grid = _grid(tmp_path, methods=["ce", {"label": "ce+crt", "after": "ce", "stage": STAGE}], seeds=[0])
    run_grid(grid, report=False, log=lambda *a: None)
    run = plan_runs(load_grid(grid))[1]
    assert compare.config_differences(run.run_dir, run.derived) == []
    changed = plan_runs(
        load_grid(
            _grid(
                tmp_path,
                methods=["ce", {"label": "ce+crt", "after": "ce", "stage": {"name": "crt", "epochs": 9, "lr": 0.1}}],
                seeds=[0],
            )
        )
    )[1]
    assert compare.config_differences(run.run_dir, changed.derived) == ["stage.epochs", "stage.lr"]
    moved = compare.DerivedStage("ce", tmp_path / "elsewhere" / "seed0", STAGE)
    assert compare.config_differences(run.run_dir, moved) == ["parent"]
    logs = []
    run_grid(
        _grid(
            tmp_path,
            methods=["ce", {"label": "ce+crt", "after": "ce", "stage": {"name": "crt", "epochs": 9}}],
            seeds=[0],
        ),
        dry_run=True,
        log=logs.append,
    )
    assert any(
        re.search(r"ce\+crt/seed0\s+done \(after default/ce/seed0: done\) \[config differs: stage.epochs\]", x)
        for x in logs
    )


def test_rebalance_is_imported_from_dicc_rebalance_when_used(tmp_path, fake_fit, monkeypatch):
    """The real entry point: dicc.rebalance.rebalance(parent_run_dir, stage, out, log=callable)."""
    import sys
    import types

    calls = []

    def rebalance(parent_run_dir, stage, out, log=print):
        calls.append((parent_run_dir, stage, out, log))
        make_run(out, _final(np.random.default_rng(0)), last=False)
        return {}

    monkeypatch.setitem(sys.modules, "dicc.rebalance", types.SimpleNamespace(rebalance=rebalance))
    logs = []
    run_grid(
        _grid(tmp_path, methods=["ce", {"label": "ce+crt", "after": "ce", "stage": STAGE}], seeds=[0]),
        report=False,
        log=logs.append,
    )
    [(parent, stage, out, log)] = calls
    assert isinstance(parent, Path) and isinstance(out, Path) and stage == STAGE and log == logs.append
    assert out == tmp_path / "out" / "default" / "ce+crt" / "seed0"


def test_a_run_recorded_with_its_resolved_data_path_matches_a_grid_giving_it_relative(tmp_path, monkeypatch):
    """Runs record data.path resolved (portable run directories); a grid that names the same
    folder relative to the working directory sees no difference, another folder is one."""
    from dicc.config import load_config, save_config

    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config(None, [f"data.path={tmp_path / 'data'}"]), run / "config.yaml")
    assert compare.config_differences(run, load_config(None, ["data.path=data"])) == []
    assert compare.config_differences(run, load_config(None, ["data.path=other"])) == ["data.path"]


def test_report_calibration_and_shot_group_table(tmp_path):
    """The second table of a setting: top-2 accuracy, ECE (lowest in bold), many / medium / few-shot
    accuracy as mean ± std over seeds, the shot groups named; runs without them (older final.json)
    leave the cells empty."""
    rng = np.random.default_rng(1)
    out = tmp_path / "out"
    extra = {}
    for method in ("ce", "bs"):
        for seed in (0, 1):
            f = _final(rng)
            if method == "ce" or seed == 0:  # bs seed 1: an older run without the new metrics
                extra[method, seed] = vals = {
                    "top2_accuracy": float(rng.uniform(0.5, 0.9)),
                    "ece": float(rng.uniform(0.02, 0.2)),
                    "many_shot_accuracy": float(rng.uniform(0.4, 0.9)),
                    "medium_shot_accuracy": float(rng.uniform(0.3, 0.7)),
                    "few_shot_accuracy": float(rng.uniform(0.0, 0.5)),
                }
                f.update(
                    vals, shot_thresholds=[1500, 200], shot_groups={"many": ["happy"], "medium": [], "few": ["disgust"]}
                )
            make_run(out / "if100" / method / f"seed{seed}", f)
    write_report(out)
    md = (out / "results.md").read_text()
    head, table = _table(md, "if100: calibration and shot groups")
    assert head == ["method", "n", "top-2 acc.", "ECE", "many-shot", "medium-shot", "few-shot"]
    keys = ["top2_accuracy", "ece", "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy"]
    for i, key in enumerate(keys):
        ce = [extra["ce", s][key] for s in (0, 1)]
        assert table["ce"][2 + i].strip("*") == _fmt(ce), key
        assert table["bs"][2 + i].strip("*") == f"{100 * extra['bs', 0][key]:.2f}", key  # one run has it
        best = (min if key == "ece" else max)(round(100 * np.mean(ce), 2), round(100 * extra["bs", 0][key], 2))
        assert table["ce"][2 + i].startswith("**") == (round(100 * np.mean(ce), 2) == best), key
    assert "many > 1500, few < 200): many: happy; medium: none; few: disgust" in md
    # the main table is unchanged: its columns stop at the recalls
    head, _ = _table(md, "if100")
    assert head[6:] == [f"recall {c}" for c, _ in sorted(zip(CLASSES, COUNTS), key=lambda t: -t[1])]
    with open(out / "results.csv") as f:
        rows = {(r["method"], r["seed"]): r for r in csv.DictReader(f)}
    assert float(rows["ce", "1"]["ece"]) == pytest.approx(extra["ce", 1]["ece"]) and rows["bs", "1"]["ece"] == ""
