"""Requests per second and latency of ``dicc serve`` on loopback, at 1, 8 and 32 concurrent clients.

Starts the real server (``python -m dicc serve MODEL --port 0``) in a subprocess, then for each
number of clients runs that many threads, each with its own keep-alive HTTP connection, posting
one photo as the raw body of ``POST /predict`` until ``--requests`` requests have been sent at that
level (bounded in count, and in time by ``--max-seconds`` per level). It reports requests/s,
p50/p95/max latency as the client sees it, how many requests failed (any status other than 200, or
an error), and the classify batches at that level (from ``/health``: faces per batch shows the
micro-batching; each batch is one forward pass per test-time view). The photo is
``skimage.data.astronaut()`` (512x512, one face) as a JPEG.

    python benchmarks/serve.py --out benchmarks/serve.md
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def photo_jpeg() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def start_server(args: list[str]) -> tuple[subprocess.Popen, str, int]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicc", "serve", *args, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()
    if not line.startswith("dicc serve: http://"):
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    hostport = line.split()[2].removeprefix("http://").rstrip("/")
    host, port = hostport.rsplit(":", 1)
    return proc, host, int(port)


def get_json(host: str, port: int, path: str) -> dict:
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def run_level(host, port, body: bytes, query: str, clients: int, total: int, max_seconds: float) -> dict:
    """``total`` requests from ``clients`` threads; latencies of those answered 200."""
    lock = threading.Lock()
    state = {"next": 0}
    latencies: list[float] = []
    failures: list[str] = []
    stop_at = time.monotonic() + max_seconds

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        try:
            while True:
                with lock:
                    if state["next"] >= total or time.monotonic() > stop_at:
                        return
                    state["next"] += 1
                t0 = time.perf_counter()
                try:
                    conn.request("POST", "/predict" + query, body=body, headers={"Content-Type": "image/jpeg"})
                    resp = conn.getresponse()
                    payload = resp.read()
                    dt = time.perf_counter() - t0
                    ok = resp.status == 200 and len(json.loads(payload)["faces"]) == 1
                except (OSError, http.client.HTTPException, ValueError) as err:
                    ok, payload, dt = False, repr(err).encode(), 0.0
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=120)
                with lock:
                    if ok:
                        latencies.append(dt)
                    else:
                        failures.append(payload[:200].decode(errors="replace"))
        finally:
            conn.close()

    before = get_json(host, port, "/health")["batching"]
    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = get_json(host, port, "/health")["batching"]
    lat = np.array(latencies) * 1000.0
    batches = after["batches"] - before["batches"]
    return {
        "clients": clients,
        "requests": len(latencies) + len(failures),
        "failed": len(failures),
        "failures": failures[:3],
        "seconds": wall,
        "rps": len(latencies) / wall,
        "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p95": float(np.percentile(lat, 95)) if len(lat) else float("nan"),
        "max": float(lat.max()) if len(lat) else float("nan"),
        "batches": batches,
        "faces_per_batch": (after["faces"] - before["faces"]) / batches if batches else 0.0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--window-ms", type=float, default=None, help="the server's --batch-window-ms (default: its own)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=160, help="requests per level")
    p.add_argument("--max-seconds", type=float, default=120.0, help="stop sending at a level after this")
    p.add_argument("--tta", nargs="+", default=[None], help="query tta= values to run (default: the model's own)")
    p.add_argument("--out", help="write the Markdown report here")
    args = p.parse_args()

    body = photo_jpeg()
    load0 = os.getloadavg()[0]
    server_args = [args.model, "--workers", str(args.workers)]
    if args.window_ms is not None:
        server_args += ["--batch-window-ms", str(args.window_ms)]
    proc, host, port = start_server(server_args)
    tables = []
    try:
        info = get_json(host, port, "/health")
        for tta in args.tta:
            query = f"?tta={tta}" if tta else ""
            for _ in range(8):  # warm-up: each worker's detector, the model's kernels
                run_level(host, port, body, query, 4, 8, 60)
            rows = [run_level(host, port, body, query, c, args.requests, args.max_seconds) for c in args.clients]
            tables.append((tta or info["defaults"]["tta"], rows))
            for r in rows:
                print(json.dumps(r), flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
    load1 = os.getloadavg()[0]

    import torch

    lines = [
        "# `dicc serve` on loopback",
        "",
        f"`POST /predict` with `skimage.data.astronaut()` as a JPEG ({len(body):,} bytes, 512x512, one face) as the "
        f"raw body, against the real server (`dicc serve {args.model} --workers {args.workers}`: detector "
        f"{info['defaults']['detector']}, align {info['defaults']['align']}, batching window "
        f"{info['batching']['window_ms']:g} ms), from N client threads in another process, each with its own "
        "keep-alive connection; the latency is what a client sees (send to last byte of the answer).",
        "",
        "Command (from the repository root, in the project's virtual environment):",
        "",
        "```bash",
        "python benchmarks/serve.py " + " ".join(sys.argv[1:]),
        "```",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared by the server, the clients and other "
        f"work running at the time (load average, 1 min: {load0:.1f} at the start, {load1:.1f} at the end); "
        f"torch {torch.__version__}, Python {platform.python_version()}. Read the numbers as this machine's, "
        "on that day, not as the service's ceiling.",
        "",
    ]
    for tta, rows in tables:
        lines += [
            f"Test-time augmentation `{tta}`"
            + (" (the bundled model's own choice, 10 views per face)" if tta == "crops" else "")
            + ":",
            "",
            "| clients | requests | failed | requests/s | p50 ms | p95 ms | max ms | batches | faces per batch |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['clients']} | {r['requests']} | {r['failed']} | {r['rps']:.1f} | {r['p50']:.0f} | "
                f"{r['p95']:.0f} | {r['max']:.0f} | {r['batches']} | {r['faces_per_batch']:.1f} |"
            )
        lines.append("")
    failed = [r for _, rows in tables for r in rows if r["failed"]]
    if failed:
        first = failed[0]["failures"]
        lines.append(f"{sum(r['failed'] for r in failed)} request(s) failed; the first answers: {first}")
    else:
        lines.append("No request failed (every answer was a 200 with the one face).")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, out)


if __name__ == "__main__":
    main()
