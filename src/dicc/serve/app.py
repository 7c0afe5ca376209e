"""The ASGI app of ``dicc serve`` (Starlette): routes, the size cap, the bearer token, JSON errors.

- ``POST /predict``: an image as the multipart field ``image`` or as the raw request body; query
  parameters ``detector``, ``tta``, ``align``. Answers :meth:`dicc.serve.Service.predict`'s JSON.
- ``GET /health``: the model, its label order, the defaults and limits, dicc's version.
- ``GET /``: the web page (``page.html``: an uploaded photo or the webcam, boxes and emotion
  bars drawn over it; no external scripts, styles or fonts).

Every refusal and every failure is ``{"error": "one line"}`` with its status: 413 for a body over
``max_bytes`` (checked on ``Content-Length`` and again while reading), 400 for a malformed
request, 422 for an image that cannot be decoded or has more pixels than the service allows, 401
without the token (when there is one; the page itself is static and needs none, the API does),
503 when the service is full, 500 for anything unexpected (its traceback goes to the server's
log, never to the client).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .service import Service
from .uploads import DEFAULT_MAX_BYTES, RequestError

log = logging.getLogger("dicc")

# the page runs only what it carries and talks only to this server
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob: data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)
MAX_NAME = 200  # characters of an upload's file name echoed in the records


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


def _json_errors(handler):
    """Turn a RequestError into its JSON answer, and anything unexpected into a 500 (logged here)."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except RequestError as err:
            return error(err.status, err.message, {"WWW-Authenticate": "Bearer"} if err.status == 401 else None)
        except HTTPException as err:  # e.g. Starlette's multipart parser
            return error(err.status_code, err.detail)
        except ClientDisconnect:  # the client went away during its upload: no one to answer
            return error(400, "the client disconnected before its upload was complete")
        except Exception:  # noqa: BLE001 - the server goes on serving
            log.exception("dicc serve: %s %s failed", request.method, request.url.path)
            return error(500, "internal error (logged on the server)")

    return wrapped


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(400, f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise RequestError(
                413, f"the upload is {size:,} bytes, over this server's limit of {limit:,} (--max-bytes)"
            )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the upload is over this server's limit of {limit:,} bytes (--max-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


async def image_from_multipart(request: Request, body: bytes) -> tuple[bytes, str]:
    """``(bytes, file name)`` of the multipart field ``image`` of an already read ``body``."""
    replayed = False

    async def receive():
        nonlocal replayed
        if replayed:
            return {"type": "http.disconnect"}
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, receive).form(max_files=4, max_fields=16)
    try:
        part = form.get("image")
        if part is None:
            got = ", ".join(sorted(form.keys())) or "none"
            raise RequestError(400, f"the multipart field 'image' is missing (fields sent: {got})")
        if isinstance(part, str):
            raise RequestError(400, "the multipart field 'image' must be a file, not a text field")
        return await part.read(), (part.filename or "upload")[:MAX_NAME]
    finally:
        await form.close()


def _authorizer(expected: bytes | None):
    """A check of a request's bearer token against ``expected`` (``b"Bearer TOKEN"``; None:
    every request passes)."""

    def authorize(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise RequestError(401, "missing or wrong bearer token (send the header 'Authorization: Bearer TOKEN')")

    return authorize


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        return error(404, f"no such page: {request.url.path}; the service has GET /, GET /health, POST /predict")
    if exc.status_code == 405:
        allowed = "POST" if request.url.path == "/predict" else "GET"
        return error(405, f"{request.method} {request.url.path} is not allowed; use {allowed}", exc.headers)
    return error(exc.status_code, exc.detail, exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    return error(500, "internal error (logged on the server)")


def create_app(service: Service, *, token: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Starlette:
    """The app serving ``service`` (closed when the app shuts down). ``token``: requests to the
    API must carry ``Authorization: Bearer TOKEN`` (401 otherwise). ``max_bytes``: the largest
    request body (413 above it)."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    expected = f"Bearer {token}".encode() if token else None
    authorize = _authorizer(expected)

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"})

    @_json_errors
    async def health(request: Request) -> Response:
        authorize(request)
        return JSONResponse({**service.info(), "max_bytes": max_bytes, "token": expected is not None})

    @_json_errors
    async def predict(request: Request) -> Response:
        authorize(request)
        options = service.options(request.query_params)  # before reading an upload with bad options
        body = await read_body(request, max_bytes)
        # any other body is the image itself, whatever its Content-Type says (curl --data-binary
        # and urllib send application/x-www-form-urlencoded unless told otherwise)
        if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            data, name = await image_from_multipart(request, body)
        else:
            data, name = body, "upload"
        return JSONResponse(await service.predict(data, name=name, **options))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            await asyncio.to_thread(service.close)

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/predict", predict, methods=["POST"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.service = service
    return app
