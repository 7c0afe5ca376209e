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
        "per_class": {c: {"precision": 0.5, "recall": float(r), "f1": 0.5, "support": 100}
                      for c, r in zip(CLASSES, recall)},
        "confusion_matrix": rng.integers(0, 20, size=(7, 7)).tolist(),
        "num_samples": 700, "epoch": 2, "best_val_mean_class_accuracy": float(rng.uniform(0.2, 0.8)),
    }


def make_run(run_dir: Path, final: dict | None, epoch_times=(1.5, 2.25), counts=COUNTS, last=True):
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for e, t in enumerate(epoch_times, 1):
            f.write(json.dumps({"epoch": e, "train_loss": 1.0, "time_epoch": t}) + "\n")
            f.write(json.dumps({"event": "recluster", "epoch": e}) + "\n")   # a strategy event: no time
    if last:
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        torch.save({"format": "dicc-checkpoint", "class_counts": list(counts), "epoch": len(epoch_times)},
                   run_dir / "checkpoints" / "last.pt")
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
    make_run(out / "if100" / "ce" / "seed3", None)      # unfinished: not in the report
    paths = write_report(out, command="dicc compare grid.yaml")
    assert paths["runs"] == 12

    # results.csv: one row per finished run, the documented columns
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    assert list(rows[0])[:7] == ["setting", "method", "seed", "val_mean_class_accuracy", "accuracy",
                                 "mean_class_accuracy", "macro_f1"]
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
                vals = [finals[setting, method, s][key] if key in finals[setting, method, s]
                        else finals[setting, method, s]["per_class"][key]["recall"] for s in range(3)]
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
    make_run(out / "default" / "ce" / "seed0", f, last=False)     # no checkpoint: natural class order
    write_report(out)
    head, table = _table((out / "results.md").read_text(), "default")
    assert head[6:] == [f"recall {c}" for c in CLASSES]
    assert table["ce"][3] == "**50.00**"          # n=1: no ± and still the best


# ---------------------------------------------------------------------------------------------
def _grid(tmp_path, **kw):
    g = {"out": str(tmp_path / "out"), "base": {"train": {"epochs": 2}, "model": {"width": 4}},
         "methods": ["ce", {"label": "ce+posthoc_la", "name": "logit_adjust", "options": {"mode": "posthoc"},
                            "set": ["optim.lr=0.02"]}],
         "seeds": [0, 1]}
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
    g = load_grid(_grid(tmp_path, settings={"if100": ["data.longtail=fer2013-if100"], "if10": ["data.longtail=exp:10"]}))
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


@pytest.mark.parametrize("change, fragment", [
    ({"method": ["ce"]}, "unknown key(s) method; valid: base, methods, out, seeds, settings"),
    ({"methods": [{"name": "ce", "lable": "x"}]}, "methods[0]: unknown key(s) lable; valid: label, name, options, set"),
    ({"methods": [{"label": "x"}]}, "needs 'name'"),
    ({"methods": ["ce", "ce"]}, "duplicate method label(s) ce"),
    ({"methods": [{"name": "ce", "label": "a/b"}]}, "no slashes"),
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"seeds": [0, "one"]}, "seeds must be a non-empty list"),
    ({"out": None}, "'out' is required"),
    ({"settings": {"x": "data.longtail"}}, "settings.x: expected a list of dotted overrides"),
    ({"settings": {"x": ["method.name=focal"]}}, "the method is set per entry"),
])
def test_grid_structure_errors(tmp_path, change, fragment):
    with pytest.raises(ValueError) as err:
        load_grid(_grid(tmp_path, **change))
    assert fragment in str(err.value)


@pytest.mark.parametrize("change, fragment", [
    ({"methods": ["ce", "dicc_typo"]}, "method entry 'dicc_typo': unknown method 'dicc_typo'; valid: "),
    ({"methods": [{"name": "logit_adjust", "options": {"tua": 1}}]}, "unknown option(s) tua; valid: mode, tau"),
    ({"methods": [{"name": "logit_adjust", "options": {"mode": "later"}}]}, "logit_adjust"),
    ({"base": {"train": {"epoch": 3}}}, "unknown key(s) in train: epoch"),
    ({"methods": [{"name": "ce", "set": ["optim.lrr=1"]}]}, "run default/ce/seed0: unknown key(s) in optim: lrr"),
])
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
        "default/ce/seed0", "default/ce/seed1", "default/ce+posthoc_la/seed0", "default/ce+posthoc_la/seed1"}
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
        ("default/ce/seed1", True), ("default/ce/seed2", False), ("default/ce+posthoc_la/seed2", False)]
    with open(tmp_path / "out" / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 6


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

    assert run_compare(parser.parse_args(["compare", str(grid), "--dry-run"])) == 0
    text = capsys.readouterr().out
    assert fake_fit == []
    assert re.search(r"default/ce/seed0\s+done", text)
    assert re.search(r"default/ce/seed1\s+partial \(2/2 epochs; will resume\)", text)
    assert re.search(r"default/ce\+posthoc_la/seed0\s+pending", text)

    assert run_compare(parser.parse_args(["compare", str(grid), "--report-only"])) == 0
    text = capsys.readouterr().out
    assert fake_fit == [] and f"dicc compare {grid}" in text
    assert f"`dicc compare {grid}`" in (tmp_path / "out" / "results.md").read_text()

    assert run_compare(parser.parse_args(["compare", str(grid), "--only", "ce+posthoc_la",
                                          "--set", "train.device=cpu"])) == 0
    assert [(c.method.name, c.train.seed, r, c.train.device) for c, r in fake_fit] == [
        ("logit_adjust", 0, False, "cpu"), ("logit_adjust", 1, False, "cpu")]


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
    grid = {"out": str(tmp_path / "out"),
            "base": {"train": {"epochs": 1, "progress": False, "batch_size": 64}, "model": {"width": 4},
                     "data": {"image_size": 24, "longtail": [30, 10, 30, 60, 40, 20, 50]}},
            "methods": ["ce", {"label": "ce+posthoc_la", "name": "logit_adjust", "options": {"mode": "posthoc"}}],
            "seeds": [0, 1]}
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
