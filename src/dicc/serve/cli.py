"""The ``dicc serve`` command: its parser, and the runner that loads the model and starts uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import sys
import threading

from ..faces import DETECTORS
from .uploads import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

TOKEN_ENV = "DICC_SERVE_TOKEN"
INSTALL_HINT = "pip install 'dicc[serve]' (starlette, uvicorn, python-multipart)"

EPILOG = f"""\
MODEL is a .pt checkpoint, a run directory, a .onnx file from `dicc export`, or `default`
(the model dicc ships, also used when MODEL is left out).
Endpoints: POST /predict (an image as the multipart field `image` or as the raw body; query
parameters detector, tta, align) -> {{"faces": [...], "image": {{...}}, "time_ms": ...}} with the
records `dicc predict --json` gives; GET /health -> the model, its label order, the version;
GET / -> a page for a photo or the webcam.
Refused: a body over --max-bytes (413), a picture over --max-pixels or one that cannot be decoded
(422), bad options (400), a missing token (401), more than --max-queue requests at once (503);
each answer is {{"error": "..."}} and the server goes on serving.
It listens on 127.0.0.1 unless --host says otherwise, and has no authentication unless --token
(or ${TOKEN_ENV}) is given: then the API needs `Authorization: Bearer TOKEN` (the page asks
for it, or takes it from its address: http://HOST:PORT/#token=TOKEN).
Ctrl-C (or SIGTERM) finishes the requests being served and stops."""


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve",
        help="an HTTP service and web page: photos and webcam frames in, faces and emotions out",
        description="Serve emotion recognition over HTTP (JSON API and a webcam page).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        nargs="?",
        default="default",
        help="checkpoint .pt, run directory, exported .onnx model, or 'default' (the bundled model)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port, printed)")
    p.add_argument(
        "--detector",
        choices=list(DETECTORS),
        default="haar",
        help="default face detector (a request may ask for another)",
    )
    _add_limits(p)
    p.add_argument("--device", default="auto", help="torch device for a .pt checkpoint (default: auto)")
    p.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")
    return p


def _add_limits(p: argparse.ArgumentParser) -> None:
    """The options that bound the service: workers, token, request and picture sizes, the
    micro-batching window, the queue."""
    p.add_argument("--workers", type=int, default=4, help="threads that decode and detect (default 4; one model)")
    p.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"require 'Authorization: Bearer TOKEN' on the API (default: ${TOKEN_ENV}, else none)",
    )
    p.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help=f"largest request body in bytes (default {DEFAULT_MAX_BYTES:,}: 10 MiB)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"largest picture in pixels, checked before decoding (default {DEFAULT_MAX_PIXELS:,})",
    )
    p.add_argument(
        "--batch-window-ms",
        type=float,
        default=5.0,
        help="how long a face waits for other requests' faces to share a forward pass (default 5)",
    )
    p.add_argument("--max-queue", type=int, default=64, help="requests accepted at once; more get 503 (default 64)")


def _check_options(args) -> None:
    for name, value in (
        ("--workers", args.workers),
        ("--max-bytes", args.max_bytes),
        ("--max-pixels", args.max_pixels),
        ("--max-queue", args.max_queue),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if args.batch_window_ms < 0:
        raise ValueError(f"--batch-window-ms must be >= 0, got {args.batch_window_ms}")
    if args.token is not None and not args.token.strip():
        raise ValueError("--token is empty")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; one that cannot be had is a ValueError naming it."""
    try:
        family = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host.strip("[]"), port), family=family, backlog=128)
    except OSError as err:
        raise ValueError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def _announce(args, rec, sock: socket.socket) -> None:
    """The address served (and, listening beyond this machine without a token, a warning)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"dicc serve: http://{shown}:{port}/ (model {rec.source or args.model}, detector {args.detector}, "
        f"{args.workers} workers){'; bearer token required' if args.token else ''}; Ctrl-C stops",
        flush=True,
    )
    if not is_loopback(args.host) and not args.token:
        print(
            f"dicc serve: warning: listening on {args.host} with no authentication: anyone who can reach port "
            f"{port} can use this service; give --token (or ${TOKEN_ENV}) to require a bearer token",
            file=sys.stderr,
            flush=True,
        )


def run_serve(args) -> int:
    _check_options(args)
    try:
        import uvicorn

        from .app import create_app
    except ImportError as err:
        print(f"dicc serve: error: the server needs {INSTALL_HINT} ({err})", file=sys.stderr)
        return 2
    from ..faces import create_detector
    from ..predict import Recognizer
    from .service import Service

    try:
        create_detector(args.detector).load()  # fail now (no OpenCV, no facenet-pytorch), not per request
        rec = Recognizer.load(args.model, device=args.device, detector=args.detector)
    except ImportError as err:
        print(f"dicc serve: error: {err}", file=sys.stderr)
        return 2
    with listen(args.host, args.port) as sock:
        service = Service(
            rec,
            detector=args.detector,
            workers=args.workers,
            window_ms=args.batch_window_ms,
            max_pixels=args.max_pixels,
            max_queue=args.max_queue,
            model_name=args.model,
        )
        app = create_app(service, token=args.token, max_bytes=args.max_bytes)
        _announce(args, rec, sock)
        if threading.current_thread() is threading.main_thread():
            # started from a shell's background job, SIGINT is inherited as ignored; uvicorn re-raises
            # the signal that stopped it once it has shut down: Ctrl-C then ends as in every command
            signal.signal(signal.SIGINT, signal.default_int_handler)
        config = uvicorn.Config(app, log_level="warning", access_log=args.access_log, lifespan="on")
        uvicorn.Server(config).run(sockets=[sock])
    return 0
