"""benchmarks/fer2013_lt/summarize.py: paired-by-seed differences and sub-class stability, checked
against numbers computed by hand on a two-seed results.csv."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "fer2013_lt" / "summarize.py"


@pytest.fixture
def summarize():
    spec = importlib.util.spec_from_file_location("summarize", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(tmp_path, rows):
    path = tmp_path / "results.csv"
    keys = [
        "setting",
        "method",
        "seed",
        "val_mean_class_accuracy",
        "accuracy",
        "mean_class_accuracy",
        "macro_f1",
        "run_dir",
    ]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def _row(tmp_path, method, seed, val, acc, mca, f1):
    return {
        "setting": "if100",
        "method": method,
        "seed": seed,
        "val_mean_class_accuracy": val,
        "accuracy": acc,
        "mean_class_accuracy": mca,
        "macro_f1": f1,
        "run_dir": str(tmp_path / method / f"seed{seed}"),
    }


def test_paired_differences_best_baseline_and_stability(tmp_path, summarize, monkeypatch, capsys):
    rows = [
        _row(tmp_path, "ce", 0, 0.30, 0.40, 0.30, 0.20),
        _row(tmp_path, "ce", 1, 0.32, 0.42, 0.34, 0.22),
        _row(tmp_path, "resample", 0, 0.50, 0.45, 0.44, 0.40),
        _row(tmp_path, "resample", 1, 0.52, 0.47, 0.46, 0.42),
        _row(tmp_path, "balanced_softmax", 0, 0.40, 0.50, 0.40, 0.30),
        _row(tmp_path, "balanced_softmax", 1, 0.41, 0.50, 0.42, 0.31),
        _row(tmp_path, "dicc", 0, 0.31, 0.42, 0.31, 0.21),
        _row(tmp_path, "dicc", 1, 0.33, 0.43, 0.36, 0.24),
    ]
    # dicc's re-clusterings: seed 0 two split classes, seed 1 one; the first split has no previous one
    for seed, nmi, events in (
        (0, 0.5, [{"happy": 0.8, "neutral": 0.6}, {"happy": 1.0, "neutral": 0.8}]),
        (1, 0.3, [{"happy": 0.9}]),
    ):
        d = tmp_path / "dicc" / f"seed{seed}"
        d.mkdir(parents=True)
        recs = [{"epoch": 1, "train_loss": 1.0}, {"event": "recluster", "agreement": {}, "nmi": {}}]
        recs += [{"event": "recluster", "agreement": a, "nmi": {c: nmi for c in a}} for a in events]
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    monkeypatch.setattr("sys.argv", ["summarize.py", str(_write(tmp_path, rows))])
    assert summarize.main() == 0
    out = capsys.readouterr().out
    # dicc - ce: accuracy +2, +1 -> +1.50 ± 0.71; MCA +1, +2; macro-F1 +1, +2; val +1, +1
    assert "| dicc − ce | 2 | +1.50 ± 0.71 | +1.50 ± 0.71 | +1.50 ± 0.71 | +1.00 ± 0.00 |" in out
    # best baseline by validation MCA is resample (not balanced_softmax, which has the best test accuracy)
    assert "**resample** (val 51.00, test MCA 45.00, test accuracy 46.00)" in out
    # dicc - resample: val -19, -19; MCA -13, -10; accuracy -3, -4
    assert "| dicc | 2 | -19.00 ± 0.00 | -11.50 ± 2.12 | -3.50 ± 0.71 |" in out
    # stability: seed 0 mean agreement (0.8+0.6+1.0+0.8)/4 = 80 %, seed 1 90 %; NMI 0.5 and 0.3
    assert "| dicc | 2 | 85.0 (80.0–90.0) | 0.40 (0.30–0.50) |" in out


def test_stability_is_none_without_a_record(tmp_path, summarize):
    assert summarize.stability(str(tmp_path / "missing")) is None
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"event": "recluster", "agreement": {}, "nmi": {}}))
    assert summarize.stability(str(tmp_path)) is None


def test_resumed_runs_count_each_reclustering_once(tmp_path, summarize, monkeypatch, capsys):
    """A run killed and resumed logs the epochs it redoes again (here a re-clustering four times and
    a stale record from before the kill, and a line cut short by the kill): only the last record
    of each (event, epoch) counts, whether the epochs are numbered from 0 or from 1."""
    rows = []
    for seed, first in ((0, 1), (1, 0)):  # seed 0 numbers epochs from 1, seed 1 from 0
        e1, e2, e3 = first, first + 1, first + 2
        d = tmp_path / "dicc" / f"seed{seed}"
        d.mkdir(parents=True)
        recs = [
            {"epoch": e1, "train_loss": 1.0, "time_epoch": 1.0},
            {"event": "recluster", "epoch": e1, "agreement": {}, "nmi": {}},  # the first split
            {"event": "recluster", "epoch": e2, "agreement": {"happy": 0.5}, "nmi": {"happy": 0.1}},
        ]  # killed
        recs += [{"event": "recluster", "epoch": e2, "agreement": {"happy": 0.7}, "nmi": {"happy": 0.3}}] * 4
        recs += [
            {"epoch": e2, "train_loss": 0.9, "time_epoch": 1.0},
            {"event": "recluster", "epoch": e3, "agreement": {"happy": 0.9}, "nmi": {"happy": 0.5}},
        ]
        text = "\n".join(json.dumps(r) for r in recs)
        (d / "metrics.jsonl").write_text(text + '\n{"event": "reclus')  # the last line cut short by a kill
        # agreement: epochs 2 and 3 once each -> (0.7 + 0.9) / 2; NMI (0.3 + 0.5) / 2
        assert summarize.stability(str(d)) == (pytest.approx(0.8), pytest.approx(0.4))
        rows += [
            _row(tmp_path, "ce", seed, 0.30, 0.40, 0.30, 0.20),
            _row(tmp_path, "dicc", seed, 0.31, 0.42, 0.31, 0.21),
        ]
    monkeypatch.setattr("sys.argv", ["summarize.py", str(_write(tmp_path, rows))])
    assert summarize.main() == 0
    assert "| dicc | 2 | 80.0 (80.0–80.0) | 0.40 (0.40–0.40) |" in capsys.readouterr().out


def test_two_ways_table_pairs_by_seed_and_names_its_columns(tmp_path, summarize):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _write(
        tmp_path / "a",
        [_row(tmp_path, "dicc", 0, 0.40, 0.50, 0.38, 0.3), _row(tmp_path, "dicc", 1, 0.42, 0.52, 0.40, 0.3)],
    )
    b = _write(
        tmp_path / "b",
        [_row(tmp_path, "dicc", 0, 0.41, 0.49, 0.37, 0.3), _row(tmp_path, "dicc", 1, 0.45, 0.50, 0.36, 0.3)],
    )
    table = summarize.parity(str(a), str(b), ("train", "clean"), ("val_mean_class_accuracy", "accuracy"))
    lines = table.splitlines()
    assert "| train | clean |" in lines[0] and len(lines) == 4
    # val MCA: 40, 42 vs 41, 45 -> differences -1, -3: mean -2.00, std 1.41; stds 1.41 and 2.83 -> within
    assert (
        lines[2] == "| if100 / dicc | 2 | val mean class accuracy | 41.00 ± 1.41 | 43.00 ± 2.83 | -2.00 ± 1.41 | yes |"
    )
    # accuracy: 50, 52 vs 49, 50 -> +1, +2: mean +1.50 > both stds (1.41, 0.71) -> outside the spread
    assert lines[3] == "| if100 / dicc | 2 | accuracy | 51.00 ± 1.41 | 49.50 ± 0.71 | +1.50 ± 0.71 | no |"


def _write_recalls(tmp_path, rows):
    """A results.csv with the recall columns of fear and disgust (rows: setting, method, seed,
    val MCA, accuracy, MCA, fear recall, disgust recall)."""
    path = tmp_path / "results.csv"
    keys = ["setting", "method", "seed", "val_mean_class_accuracy", "accuracy", "mean_class_accuracy"]
    keys += ["macro_f1", "recall_disgust", "recall_fear", "run_dir"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        for s, m, k, val, acc, mca, fear, dis in rows:
            w.writerow(dict(zip(keys, (s, m, k, val, acc, mca, 0.3, dis, fear, str(tmp_path / m / f"seed{k}")))))
    return path


def test_issue25_answers_pair_by_seed_with_fear_and_disgust(tmp_path, summarize, monkeypatch, capsys):
    rows = [
        ("if100", "ce", 0, 0.30, 0.40, 0.30, 0.10, 0.00),
        ("if100", "ce", 1, 0.32, 0.42, 0.32, 0.12, 0.05),
        ("if100", "balanced_softmax", 0, 0.40, 0.45, 0.40, 0.20, 0.30),
        ("if100", "balanced_softmax", 1, 0.42, 0.47, 0.42, 0.22, 0.40),
        ("if100", "bsm+crt", 0, 0.44, 0.48, 0.46, 0.30, 0.50),
        ("if100", "bsm+crt", 1, 0.46, 0.50, 0.44, 0.26, 0.45),
        ("if100", "dicc+bsm", 0, 0.48, 0.46, 0.41, 0.21, 0.35),
        ("if100", "dicc+bsm", 1, 0.50, 0.49, 0.45, 0.25, 0.30),
        ("if100", "dicc+con_x", 0, 0.43, 0.47, 0.43, 0.28, 0.40),
        ("if100", "dicc+con_x+crt", 0, 0.47, 0.49, 0.48, 0.33, 0.55),  # seed 1 not run
        ("if10", "ce", 0, 0.50, 0.55, 0.50, 0.20, 0.40),
        ("if10", "balanced_softmax", 0, 0.55, 0.56, 0.54, 0.25, 0.50),
    ]
    monkeypatch.setattr("sys.argv", ["summarize.py", str(_write_recalls(tmp_path, rows))])
    assert summarize.main() == 0
    out = capsys.readouterr().out
    if100, if10 = out.split("## if10\n")
    # best DICC by validation: dicc+bsm (mean val 49 > dicc+con_x+crt's 47, though that one has
    # the better test MCA); best non-DICC: bsm+crt (45 > balanced_softmax's 41)
    assert "| best DICC entry (validation) | dicc+bsm | 0, 1 | none | 49.00 ± 1.41 |" in if100
    assert "| best non-DICC entry (validation) | bsm+crt | 0, 1 | none | 45.00 ± 1.41 |" in if100
    # the contrastive entry has seed 0 only: listed as missing seed 1; its numbers are seed 0's
    assert "| contrastive DICC + cRT | dicc+con_x+crt | 0 | 1 | 47.00 | 48.00 | 49.00 | 33.00 | 55.00 |" in if100
    # dicc+bsm - bsm+crt at seeds 0, 1: val +4, +4; MCA -5, +1 (mean -2, std sqrt(18) = 4.24);
    # accuracy -2, -1; fear -9, -1 (std sqrt(32) = 5.66); disgust -15, -15
    assert (
        "| dicc+bsm − bsm+crt | 0, 1 | +4.00 ± 0.00 | -2.00 ± 4.24 | -1.50 ± 0.71 | -5.00 ± 5.66 | -15.00 ± 0.00 |"
        in if100
    )
    # dicc+con_x+crt - bsm+crt: seed 0 only (47-44, 48-46, 49-48, 33-30, 55-50)
    assert "| dicc+con_x+crt − bsm+crt | 0 | +3.00 | +2.00 | +1.00 | +3.00 | +5.00 |" in if100
    assert "Entry to use on if100 (highest validation MCA of all entries): **dicc+bsm**." in if100
    # a contrastive entry's base is balanced_softmax (its head's loss): accuracy 47 - 45
    assert "| dicc+con_x − balanced_softmax | 1 | +2.00 |" in if100
    # IF=10 has no DICC, contrastive or bsm+crt rows: named as not run, with every seed missing
    assert "| best DICC entry (validation) | not run | none | 0, 1 | – | – | – | – | – |" in if10
    assert "| bsm+crt | not run | none | 0, 1 | – | – | – | – | – |" in if10
    assert "| contrastive DICC + cRT (not run) − bsm+crt (not run) | none |" in if10
    assert "Entry to use on if10 (highest validation MCA of all entries): **balanced_softmax**." in if10


def test_best_by_validation_ignores_missing_scores_and_keeps_the_first_on_ties(summarize):
    nan = float("nan")
    runs = {
        ("s", "a"): {0: {"val_mean_class_accuracy": 0.5}},
        ("s", "b"): {0: {"val_mean_class_accuracy": 0.5}, 1: {"val_mean_class_accuracy": nan}},
        ("s", "c"): {0: {"val_mean_class_accuracy": nan}},
    }
    assert summarize.best_by_validation(runs, "s", ["c", "a", "b"]) == "a"
    assert summarize.best_by_validation(runs, "s", ["c"]) is None
    assert summarize.best_by_validation(runs, "s", []) is None


def test_pilot_table_orders_by_validation_and_marks_the_choice(tmp_path, summarize):
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    pilot = _write_recalls(
        tmp_path / "p",
        [
            ("if100", "dicc+con_a", 0, 0.45, 0.50, 0.47, 0.10, 0.30),
            ("if100", "dicc+con_a+crt", 0, 0.48, 0.49, 0.46, 0.20, 0.40),  # best val, lower test MCA
            ("if100", "dicc+con_b", 0, 0.48, 0.52, 0.49, 0.15, 0.35),  # tie on val: the earlier one wins
            ("if100", "dicc+con_b", 1, 0.60, 0.60, 0.60, 0.60, 0.60),  # another seed: not the pilot's
        ],
    )
    grid = _write_recalls(tmp_path / "g", [("if100", "bsm+crt", 0, 0.52, 0.55, 0.51, 0.29, 0.46)])
    lines = summarize.pilot(str(grid), str(pilot)).splitlines()
    assert lines[2] == "| dicc+con_a+crt | 48.00 | 46.00 | 49.00 | 20.00 | 40.00 | **chosen** |"
    assert lines[3] == "| dicc+con_b | 48.00 | 49.00 | 52.00 | 15.00 | 35.00 |  |"
    assert lines[4].startswith("| dicc+con_a | 45.00 |")
    assert lines[5] == "| bsm+crt | 52.00 | 51.00 | 55.00 | 29.00 | 46.00 | reference |"
    assert len(lines) == 6


def test_retrained_table_leaves_out_the_copied_second_stages(tmp_path, summarize, monkeypatch, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rec = [
        _row(tmp_path, "balanced_softmax", 0, 0.50, 0.53, 0.48, 0.4),
        _row(tmp_path, "bsm+crt", 0, 0.52, 0.55, 0.51, 0.4),
    ]
    new = [
        _row(tmp_path, "balanced_softmax", 0, 0.51, 0.54, 0.50, 0.4),
        _row(tmp_path, "bsm+crt", 0, 0.52, 0.55, 0.51, 0.4),
    ]
    argv = ["summarize.py", str(_write(tmp_path / "a", rec)), "--retrained", str(_write(tmp_path / "b", new))]
    monkeypatch.setattr("sys.argv", argv)
    assert summarize.main() == 0
    lines = capsys.readouterr().out.splitlines()
    assert "| recorded (grid.yaml) | retrained (crt_parents.yaml) |" in lines[0]
    assert len(lines) == 5 and not any("bsm+crt" in line for line in lines)  # 3 metrics of one method
    # test MCA 48 recorded, 50 retrained: -2.00; one seed has no spread, so it lies outside
    assert (
        lines[4] == "| if100 / balanced_softmax | 1 | mean class accuracy | 48.00 ± 0.00 | 50.00 ± 0.00 | -2.00 | no |"
    )


def test_add_merges_csvs_the_later_row_winning(tmp_path, summarize, monkeypatch, capsys):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    a = _write(
        tmp_path / "a", [_row(tmp_path, "ce", 0, 0.30, 0.40, 0.30, 0.2), _row(tmp_path, "dicc", 0, 0.9, 0.9, 0.9, 0.9)]
    )
    b = _write(tmp_path / "b", [_row(tmp_path, "dicc", 0, 0.31, 0.42, 0.31, 0.21)])  # replaces a's dicc seed 0
    monkeypatch.setattr("sys.argv", ["summarize.py", str(a), "--add", str(b)])
    assert summarize.main() == 0
    assert "| dicc − ce | 1 | +2.00 | +1.00 | +1.00 | +1.00 |" in capsys.readouterr().out


def test_longer_pairs_each_entry_with_itself_at_the_longer_schedule(tmp_path, summarize, monkeypatch, capsys):
    for d in ("a", "b", "c"):
        (tmp_path / d).mkdir()
    short = _write(tmp_path / "a", [_row(tmp_path, "bsm+crt", k, 0.50 + k / 100, 0.5, 0.48, 0.4) for k in (0, 1)])
    added = _write(tmp_path / "b", [_row(tmp_path, "dicc+con", 0, 0.40, 0.5, 0.45, 0.4)])  # from the --add CSV
    long = _write(
        tmp_path / "c",
        [_row(tmp_path, "bsm+crt", 0, 0.53, 0.5, 0.50, 0.4), _row(tmp_path, "dicc+con", 0, 0.44, 0.5, 0.46, 0.4)],
    )
    monkeypatch.setattr("sys.argv", ["summarize.py", str(short), "--add", str(added), "--longer", str(long)])
    assert summarize.main() == 0
    lines = capsys.readouterr().out.splitlines()
    assert "| 20 epochs | 10 epochs | paired difference |" in lines[0]  # 20 minus 10
    # bsm+crt: only seed 0 has both schedules (val MCA 50 -> 53: +3.00); seed 1 has no 20-epoch run
    assert "| if100 / bsm+crt | 1 | val mean class accuracy | 53.00 ± 0.00 | 50.00 ± 0.00 | +3.00 | no |" in lines
    assert "| if100 / dicc+con | 1 | mean class accuracy | 46.00 ± 0.00 | 45.00 ± 0.00 | +1.00 | no |" in lines
