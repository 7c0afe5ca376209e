"""``dicc serve``: emotion recognition over HTTP, and a web page for a photo or the webcam.

- :mod:`.service`: :class:`Service`, one model behind a bounded pool of workers (decode, detect,
  crop) and a micro-batcher (the faces of concurrent requests in one forward pass);
- :mod:`.batching`: :class:`MicroBatcher`, rows from several threads joined into one call;
- :mod:`.uploads`: uploaded bytes -> an image, with the pixel cap checked before decoding;
- :mod:`.app`: :func:`create_app`, the ASGI app (Starlette): routes, size cap, token, JSON errors;
- ``page.html``: the page served at ``/`` (no external scripts, styles or fonts);
- :mod:`.cli`: the ``dicc serve`` command (uvicorn).

Starlette, uvicorn and python-multipart come with the ``serve`` extra; only :mod:`.app` and
:func:`run_serve` need them.
"""

from .batching import MicroBatcher
from .cli import add_serve_parser, run_serve
from .service import Service
from .uploads import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, RequestError, decode_upload

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "MicroBatcher",
    "RequestError",
    "Service",
    "add_serve_parser",
    "create_app",
    "decode_upload",
    "run_serve",
]


def __getattr__(name: str):
    if name == "create_app":  # imports Starlette
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'dicc.serve' has no attribute {name!r}")
