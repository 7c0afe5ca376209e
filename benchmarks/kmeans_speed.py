"""Torch k-means (dicc.clustering.kmeans) against scikit-learn's KMeans, side by side.

Features are shaped like DICC's problem: one majority class of FER2013-IF100 (4300 x 256,
happy) and a large class set (30000 x 512), L2-normalised, drawn from a mixture of overlapping
Gaussian "styles" (more styles than clusters, so k-means has real work to do). Both get the
same data, the same k, n_init and max_iter; the table gives the median wall time of
``--repeats`` runs and the inertia ratio (torch / sklearn; < 1 means torch found a lower
objective). A last block times the whole per-class ``SubclassClusterer.fit`` on
FER2013-IF100-shaped features (7 classes, 10739 x 256) for each backend.

    python benchmarks/kmeans_speed.py                  # CPU, and CUDA when available
    python benchmarks/kmeans_speed.py --threads 2 --devices cpu
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch

from dicc.clustering import SubclassClusterer, kmeans, plan_subclasses

FER_IF100 = [387, 43, 1077, 4300, 1796, 139, 2997]


def clustered(n: int, dim: int, styles: int, seed: int, spread: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(styles, dim, generator=g)
    weights = torch.rand(styles, generator=g) + 0.5
    which = torch.multinomial(weights, n, replacement=True, generator=g)
    x = centers[which] + spread * math.sqrt(2.0) * torch.randn(n, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1)


def timed(fn, repeats: int, sync=None) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        if sync:
            sync()
        t = time.perf_counter()
        out = fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="4300x256,30000x512")
    ap.add_argument("--ks", default="2,3,4")
    ap.add_argument("--n-init", type=int, default=3)
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch and sklearn (0 = library default)")
    ap.add_argument("--devices", default="auto", help="cpu, cuda, or auto (cpu plus cuda when available)")
    args = ap.parse_args()

    from sklearn.cluster import KMeans
    import sklearn
    from threadpoolctl import threadpool_limits

    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    devices = ["cpu", "cuda"] if args.devices == "auto" else args.devices.split(",")
    devices = [d for d in devices if d != "cuda" or torch.cuda.is_available()]
    cuda = "cuda" in devices
    sync = torch.cuda.synchronize if cuda else None
    print(
        f"# torch {torch.__version__}, scikit-learn {sklearn.__version__}, python {platform.python_version()}, "
        f"{torch.get_num_threads()} torch CPU threads" + (f", GPU {torch.cuda.get_device_name(0)}" if cuda else "")
    )
    print(f"# n_init={args.n_init}, max_iter={args.max_iter}, tol=1e-4, median of {args.repeats} runs\n")

    cols = (
        ["shape", "k", "sklearn s", "torch cpu s"]
        + (["torch cuda s"] if cuda else [])
        + ["inertia torch/sklearn"]
        + (["inertia cuda/sklearn"] if cuda else [])
    )
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    if cuda:  # initialise CUDA outside the timings
        kmeans(torch.randn(256, 8, device="cuda"), 2)
        torch.cuda.synchronize()
    for shape in args.shapes.split(","):
        n, dim = (int(v) for v in shape.split("x"))
        for k in (int(v) for v in args.ks.split(",")):
            x = clustered(n, dim, styles=2 * k + 1, seed=n + k)
            xn = x.numpy()
            t_sk, km = timed(
                lambda: KMeans(n_clusters=k, n_init=args.n_init, max_iter=args.max_iter, random_state=0).fit(xn),
                args.repeats,
            )
            row = [shape, str(k), f"{t_sk:.3f}"]
            ratios = []
            if "cpu" in devices:
                t_cpu, res = timed(
                    lambda: kmeans(x, k, n_init=args.n_init, max_iter=args.max_iter, generator=0), args.repeats
                )
                row.append(f"{t_cpu:.3f}")
                ratios.append(f"{res[2] / km.inertia_:.4f}")
            else:
                row.append("-")
                ratios.append("-")
            if cuda:
                xc = x.cuda()
                t_gpu, res = timed(
                    lambda: kmeans(xc, k, n_init=args.n_init, max_iter=args.max_iter, generator=0), args.repeats, sync
                )
                row.append(f"{t_gpu:.3f}")
                ratios.append(f"{res[2] / km.inertia_:.4f}")
            print("| " + " | ".join(row + ratios) + " |", flush=True)

    # the whole per-class fit, FER2013-IF100-shaped
    plan = plan_subclasses(FER_IF100)
    feats = torch.cat([clustered(n, 256, styles=5, seed=c) for c, n in enumerate(FER_IF100)])
    labels = torch.repeat_interleave(torch.arange(7), torch.tensor(FER_IF100))
    print(
        f"\nSubclassClusterer.fit on {len(labels)}x256 (FER2013-IF100 counts, k={plan.k}), "
        f"n_init={args.n_init}: first fit (k-means++) and a warm-started re-fit\n"
    )
    print("| backend | first fit s | warm re-fit s | inertia |")
    print("|---|---|---|---|")
    runs = [("sklearn", "cpu"), ("torch", "cpu")] + ([("torch", "cuda")] if cuda else [])
    for backend, dev in runs:
        if dev == "cpu" and "cpu" not in devices and backend == "torch":
            continue
        f, y = feats.to(dev), labels.to(dev)
        cl = SubclassClusterer(plan, backend=backend, n_init=args.n_init, max_iter=args.max_iter, seed=0)
        t1, first = timed(
            lambda: SubclassClusterer(**cl.get_params()).fit(f, y), args.repeats, sync if dev == "cuda" else None
        )
        drift = torch.nn.functional.normalize(f + 0.01 * torch.randn_like(f), dim=1)
        warm = {**cl.get_params(), "init": first.cluster_centers_, "previous_labels": first.labels_}
        t2, again = timed(
            lambda: SubclassClusterer(**warm).fit(drift, y), args.repeats, sync if dev == "cuda" else None
        )
        name = f"{backend} ({dev})"
        print(f"| {name} | {t1:.3f} | {t2:.3f} | {first.inertia_:.2f} |", flush=True)


if __name__ == "__main__":
    main()
