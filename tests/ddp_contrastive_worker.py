"""Worker for tests/test_contrastive.py's DDP test, launched with ``torchrun --nproc_per_node=2``
(gloo): ``python ddp_contrastive_worker.py OUT OVERRIDE...``.

1. The contrastive loss with embeddings gathered across ranks (``all_gather_rows``): each rank's
   anchors against both ranks' rows; the gradient each rank gets for its rows equals the world
   size times the gradient of one process holding the whole batch (whose loss is the mean of
   the ranks'; DDP then averages the parameters' gradients over the ranks).
2. A DICC run with the contrastive option trains under DDP; every rank ends with the same weights.
Writes ``OUT/rank<r>.json``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from dicc import distributed
from dicc.config import load_config
from dicc.contrastive import subclass_supcon
from dicc.engine import fit

OUT = Path(sys.argv[1])
OVERRIDES = sys.argv[2:]

info = distributed.setup("cpu")
rank, world = info.rank, info.world_size
facts: dict = {"rank": rank, "world_size": world}

# 1. gathered loss and gradients against one process holding everything
g = torch.Generator().manual_seed(0)
z_all = F.normalize(torch.randn(8, 6, generator=g), dim=1)
sub_all = torch.tensor([0, 1, 2, 2, 0, 1, 2, 3])
cls_all = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
whole = z_all.clone().requires_grad_(True)
subclass_supcon(whole, sub_all, cls_all).backward()
mine = slice(rank * 4, rank * 4 + 4)
z = z_all[mine].clone().requires_grad_(True)
contrast, offset = distributed.all_gather_rows(z, sub_all[mine], cls_all[mine])
loss = subclass_supcon(z, sub_all[mine], cls_all[mine], contrast=contrast, offset=offset)
loss.backward()
grad = z.grad.clone()
parts = [torch.empty_like(grad) for _ in range(world)]
dist.all_gather(parts, grad)
facts["offset"] = offset
# each rank's rows get the gradient of every rank's loss (all_gather's backward sums it back);
# the whole batch's loss is the mean of the ranks' losses: so the ranks' gradients are world x its
facts["grad_matches"] = bool(torch.allclose(torch.cat(parts), whole.grad * world, atol=1e-6))
facts["grad_max_diff"] = float((torch.cat(parts) - whole.grad * world).abs().max())

# 2. a short contrastive DICC run: the ranks stay identical
res = fit(load_config(None, [f"train.out={OUT / 'run'}", *OVERRIDES]), log=lambda *a: None)
digest = hashlib.sha256()
for k, v in sorted(res.model.state_dict().items()):
    digest.update(k.encode())
    digest.update(v.detach().float().contiguous().numpy().tobytes())
facts["weights"] = digest.hexdigest()
facts["final_mca"] = res.final["mean_class_accuracy"]
(OUT / f"rank{rank}.json").write_text(json.dumps(facts))
distributed.teardown(info)
