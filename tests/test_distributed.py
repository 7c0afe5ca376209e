"""Two CPU processes (gloo) under ``torchrun``: a DICC run that re-clusters, its resume, and
the metrics against a single-process evaluation of the checkpoint it reports.

One torchrun launch (tests/ddp_worker.py) trains the run uninterrupted from the command line,
then the same run interrupted after epoch 3 and resumed, and records per rank what it held
after every epoch; the assertions below read what it wrote.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dicc.cli import main as cli_main

HERE = Path(__file__).parent
EPOCHS, STOP = 4, 3
OVERRIDES = [
    "data.longtail=[48,16,48,128,64,32,96]",
    "data.val=val",
    "model.width=8",
    "train.batch_size=16",
    "optim.lr=0.04",
    "optim.schedule=constant",
    f"train.epochs={EPOCHS}",
    "train.progress=false",
    "method.name=dicc",
    "method.options.warmup_epochs=2",
    "method.options.recluster_every=1",
    "method.options.n_init=1",
]


def _torchrun() -> list[str]:
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "DICC_TEST_STOP_EPOCH": str(STOP), "PYTHONUNBUFFERED": "1"}
    env.pop("OMP_NUM_THREADS", None)  # the engine picks the threads per process
    cmd = [*_torchrun(), "--standalone", "--nproc_per_node=2", str(HERE / "ddp_worker.py"), str(out), *OVERRIDES]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=480)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, f"torchrun failed ({wall:.0f}s):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    facts = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    snaps = {
        run: [torch.load(out / run / f"rank{r}.pt", weights_only=True) for r in range(2)]
        for run in ("full", "cut", "ema")
    }
    return {"out": out, "facts": facts, "snaps": snaps, "stdout": proc.stdout, "wall": wall}


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_state(a: dict, b: dict, where: str) -> None:
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:  # parameters and buffers (BatchNorm statistics), bit for bit
        assert torch.equal(a["model"][k], b["model"][k]), f"{where}: {k}"
    for k in ("pseudo", "centroids"):
        assert (a[k] is None) == (b[k] is None), f"{where}: {k}"
        if a[k] is not None:
            assert torch.equal(a[k], b[k]), f"{where}: {k}"


@pytest.mark.slow
def test_ranks_stay_identical_through_reclustering(ddp):
    f0, f1 = ddp["facts"]
    assert f0["cli_rc"] == f1["cli_rc"] == 0
    assert f0["world_size"] == 2 and f0["backend"] == "gloo"
    assert f0["group_kept_after_fit"] and f1["group_kept_after_fit"]  # later fits reuse the group
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert f0["threads"] == max(1, cores // 2)
    r0, r1 = ddp["snaps"]["full"]
    assert len(r0) == len(r1) == EPOCHS + 1  # one validation per epoch, then the test split
    for e, (a, b) in enumerate(zip(r0, r1)):
        _assert_same_state(a, b, f"after epoch {e + 1}" if e < EPOCHS else "final test")
    # DDP wrapped the model once per fit that got past its checks (full, cut, resumed, fail, ema);
    # DICC rewrote the head in place, so the parameter DDP's reducer hooked is still the head's
    assert f0["ddp_wraps"] == f1["ddp_wraps"] == 5
    assert all(s["head_is_wrapped_param"] for s in r0 + r1)
    # warm-up on epochs 0-1, first split at the start of epoch 2, re-clustered at epoch 3
    assert [s["rounds"] for s in r0[:EPOCHS]] == [0, 0, 1, 2]
    assert r0[EPOCHS - 1]["pseudo"] is not None and len(r0[EPOCHS - 1]["pseudo"]) == 432
    # rank 0 saved what every rank held
    d = ddp["out"] / "full"
    last = torch.load(d / "checkpoints/last.pt", weights_only=True)
    _assert_same_state(
        {
            "model": last["model"],
            "pseudo": last["strategy"]["state"]["pseudo"],
            "centroids": last["strategy"]["state"]["centroids"],
        },
        r0[EPOCHS - 1],
        "last.pt",
    )
    assert len(last["rank_states"]) == 2
    # files written once, by rank 0
    recs = _records(d)
    assert [r["epoch"] for r in recs if "train_loss" in r] == list(range(1, EPOCHS + 1))
    assert [r["epoch"] for r in recs if r.get("event") == "recluster"] == [3, 4]  # 1-based
    assert ddp["stdout"].count("method dicc, model") == 1


@pytest.mark.slow
def test_metrics_equal_single_process_evaluation(ddp, capsys):
    d = ddp["out"] / "full"
    final = json.loads((d / "final.json").read_text())
    assert final["num_samples"] == 700 and sum(map(sum, final["confusion_matrix"])) == 700  # no dupes, no drops
    assert len({tuple(r) for r in final["confusion_matrix"]}) > 1, "degenerate model: the check would be vacuous"
    capsys.readouterr()
    assert cli_main(["evaluate", str(d / "checkpoints" / final["checkpoint"]), "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    for k in ("accuracy", "mean_class_accuracy", "macro_f1", "per_class", "confusion_matrix", "num_samples"):
        assert single[k] == final[k], k
    # and the last epoch's validation numbers (sharded over the ranks) are last.pt's
    val = [r for r in _records(d) if "val_accuracy" in r][-1]
    assert cli_main(["evaluate", str(d / "checkpoints/last.pt"), "--split", "val", "--json"]) == 0
    single_val = json.loads(capsys.readouterr().out)
    assert single_val["num_samples"] == 350
    assert (val["val_accuracy"], val["val_mean_class_accuracy"]) == (
        single_val["accuracy"],
        single_val["mean_class_accuracy"],
    )


@pytest.mark.slow
def test_resume_under_torchrun_continues_exactly(ddp):
    f0, f1 = ddp["facts"]
    assert f0["interrupted"] and f1["interrupted"]
    # started again without resume: every rank fails (rank 0 checked the directory), none hangs
    assert "--resume" in f0["exists_error"] and f0["exists_error"] == f1["exists_error"]
    full, cut = ddp["snaps"]["full"], ddp["snaps"]["cut"]
    assert len(cut[0]) == len(cut[1]) == EPOCHS - STOP + 1
    for r in range(2):
        for a, b in zip(full[r][STOP:], cut[r]):  # epoch 4 (re-clustered after resuming) and the test
            _assert_same_state(a, b, f"rank {r}")
    assert (
        f0["resumed_final"]["confusion_matrix"]
        == json.loads((ddp["out"] / "full/final.json").read_text())["confusion_matrix"]
    )
    recs = _records(ddp["out"] / "cut")
    assert [r["epoch"] for r in recs if "train_loss" in r] == list(range(1, EPOCHS + 1))
    assert [r["epoch"] for r in recs if r.get("event") == "recluster"] == [3, 4]  # 1-based


@pytest.mark.slow
def test_collectives_with_unequal_shards(ddp):
    for f in ddp["facts"]:
        assert f["gather_7_ok"] and f["gather_1_ok"]  # 4 + 3 rows, and 1 + 0 rows
        assert f["broadcast_object"] == {"from": 0}
        assert f["raise_if_any"] == "rank 1 says no"  # raised on rank 0 too
    # an exception the other ranks could not rebuild arrives as a description; its own rank
    # raises the original
    assert [f["raise_if_any_custom"] for f in ddp["facts"]] == [
        ["RuntimeError", "TwoArgError: x/y"],
        ["TwoArgError", "x/y"],
    ]


@pytest.mark.slow
def test_clustering_error_on_rank0_reaches_every_rank(ddp):
    # rank 0's k-means raised at the first split; rank 1 raised the same error instead of
    # waiting for the pseudo-labels, and the run wrote no final.json
    assert [f.get("cluster_error") for f in ddp["facts"]] == ["test hook: k-means failed on rank 0"] * 2
    assert not (ddp["out"] / "fail" / "final.json").exists()


@pytest.mark.slow
def test_teardown_frees_ddp_wrappers_before_the_group(ddp):
    # the failed fits above left a DDP wrapper in a reference cycle (their tracebacks); the exit
    # handler's teardown collects it while the group is alive, not during interpreter shutdown
    assert [f["ddp_alive_after_teardown"] for f in ddp["facts"]] == [0, 0]


@pytest.mark.slow
def test_ema_and_accumulation_under_ddp(ddp, capsys):
    """train.ema + train.accumulate=2 + train.grad_clip on two ranks: both ranks hold the same trained
    and averaged weights after every epoch (the average is updated on each rank from the
    all-reduced weights), the non-final micro-batches skip the all-reduce, last.pt holds the
    average as `model` and the trained weights as `raw_model`, and the test metrics are those of
    a single-process evaluation of best.pt."""
    r0, r1 = ddp["snaps"]["ema"]
    assert len(r0) == len(r1) == EPOCHS + 1
    for e, (a, b) in enumerate(zip(r0, r1)):
        _assert_same_state(a, b, f"ema run, evaluation {e + 1}")
        for k in a["evaluated"]:
            assert torch.equal(a["evaluated"][k], b["evaluated"][k]), (e, k)
    assert not torch.equal(r0[EPOCHS - 1]["evaluated"]["head.weight"], r0[EPOCHS - 1]["model"]["head.weight"])
    batches = (432 // 2) // 16  # per rank and epoch: 13, in groups of 2 -> 6 micro-batches without a sync
    assert [f["no_sync"] for f in ddp["facts"]] == [EPOCHS * (batches - -(-batches // 2))] * 2
    d = ddp["out"] / "ema"
    last = torch.load(d / "checkpoints/last.pt", weights_only=True)
    assert last["step"] == EPOCHS * -(-batches // 2)
    for k in last["model"]:
        assert torch.equal(last["model"][k], r0[EPOCHS - 1]["evaluated"][k]), k
        assert torch.equal(last["raw_model"][k], r0[EPOCHS - 1]["model"][k]), k
    final = json.loads((d / "final.json").read_text())
    assert final["weights"] == "ema" and final == ddp["facts"][1]["ema_final"]
    capsys.readouterr()
    assert cli_main(["evaluate", str(d / "checkpoints" / final["checkpoint"]), "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    for k in ("accuracy", "mean_class_accuracy", "confusion_matrix", "top2_accuracy", "num_samples"):
        assert single[k] == final[k], k
    assert single["ece"] == pytest.approx(final["ece"], abs=1e-6)
