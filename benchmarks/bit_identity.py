"""Behaviour unchanged by a refactor: train one CE and one DICC run on the built-in data and
hash what they produce, for comparing two source trees.

    PYTHONPATH=OLD_TREE/src python benchmarks/bit_identity.py /tmp/ident/before
    PYTHONPATH=NEW_TREE/src python benchmarks/bit_identity.py /tmp/ident/after
    cmp /tmp/ident/before/ident.json /tmp/ident/after/ident.json    # identical: nothing changed

Each run: a long-tailed subset of the built-in data, vgg_fer width 8, 4 epochs, batch 32, one
thread (DICC with one k-means++ restart). Hashed: the last checkpoint's weights (and DICC's
pseudo-labels), the test confusion matrix, and every metrics.jsonl line but its timings.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys

import torch

from dicc.config import load_config
from dicc.engine import fit


def main(out: str) -> dict:
    torch.set_num_threads(1)
    res = {}
    for name, extra in (("ce", []), ("dicc", ["method.name=dicc", "method.options.n_init=1"])):
        d = f"{out}/{name}"
        shutil.rmtree(d, ignore_errors=True)
        keys = ["data.longtail=[48,16,48,128,64,32,96]", "model.width=8", "train.epochs=4", "train.batch_size=32"]
        cfg = load_config(None, [*keys, "train.progress=false", f"train.out={d}", *extra])
        run = fit(cfg, log=lambda *a: None)
        ckpt = torch.load(f"{d}/checkpoints/last.pt", weights_only=True)
        h = hashlib.sha256()
        for k in sorted(ckpt["model"]):
            h.update(k.encode())
            h.update(ckpt["model"][k].numpy().tobytes())
        if "pseudo" in ckpt["strategy"]["state"]:
            h.update(ckpt["strategy"]["state"]["pseudo"].numpy().tobytes())
        cm = json.dumps(run.final["confusion_matrix"]).encode()
        with open(f"{d}/metrics.jsonl") as f:
            lines = [{k: v for k, v in json.loads(x).items() if not k.startswith("time")} for x in f]
        res[name] = {
            "weights+pseudo": h.hexdigest()[:16],
            "test_cm": hashlib.sha256(cm).hexdigest()[:16],
            "metrics": lines,
        }
    with open(f"{out}/ident.json", "w") as f:
        json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    for name, r in main(sys.argv[1]).items():
        print(name, r["weights+pseudo"], r["test_cm"])
