"""``dicc serve``: the micro-batcher, upload decoding, the app through its test client, the CLI, and the
real server in a subprocess called over HTTP on loopback."""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

pytest.importorskip("starlette", reason="dicc serve needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx")
pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

from starlette.testclient import TestClient  # noqa: E402

import dicc  # noqa: E402
from dicc import EMOTIONS  # noqa: E402
from dicc.cli import main  # noqa: E402
from dicc.predict import Recognizer  # noqa: E402
from dicc.serve import MicroBatcher, RequestError, Service, create_app, decode_upload  # noqa: E402
from dicc.serve.cli import is_loopback  # noqa: E402

from helpers import make_checkpoint, start_server, stop_server  # noqa: E402


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def ckpt(workdir) -> Path:
    return make_checkpoint(workdir / "ce.pt", mean=0.45, std=0.3)


@pytest.fixture
def rec(ckpt) -> Recognizer:
    return Recognizer.from_checkpoint(ckpt, device="cpu")


def _png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos(workdir) -> dict[str, Path]:
    """The astronaut (one face), three copies of her head (three faces), a blank (none)."""
    astronaut = skdata.astronaut()
    crop = astronaut[6:221, 117:332]
    group = np.ascontiguousarray(np.concatenate([crop, crop[:, ::-1], crop], axis=1))
    out = {}
    for name, arr in (
        ("astronaut", astronaut),
        ("group", group),
        ("blank", np.full((120, 160), 128, np.uint8)),
    ):
        out[name] = workdir / f"{name}.png"
        out[name].write_bytes(_png(arr))
    return out


def _bytes(photos, name: str) -> bytes:
    return photos[name].read_bytes()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels, with a few bytes of data: what a
    decompression bomb looks like before it is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _faces_without_file(faces):
    return [{k: v for k, v in f.items() if k != "file"} for f in faces]


def _assert_same_faces(got, want, atol=2e-6):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert {k: v for k, v in g.items() if k != "emotions"} == {k: v for k, v in w.items() if k != "emotions"}
        assert list(g["emotions"]) == list(w["emotions"])
        np.testing.assert_allclose(list(g["emotions"].values()), list(w["emotions"].values()), atol=atol)


def _assert_error(resp, status: int, *words: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    for w in words:
        assert w in body["error"]
    return body


# -- the micro-batcher ---------------------------------------------------------------------------------
class Gate:
    """A function that records its calls (rows and key per call) and holds its first call until ``open()``."""

    def __init__(self, inner) -> None:
        self.inner, self.calls, self.keys = inner, [], []
        self._open = threading.Event()

    def open(self) -> None:
        self._open.set()

    def __call__(self, x, *key):
        self.calls.append(len(x))
        self.keys.extend(key)
        if len(self.calls) == 1:
            assert self._open.wait(60), "the gate was never opened"
        return self.inner(x, *key)


def _open_when(gate: Gate, condition) -> threading.Thread:
    def watch():
        for _ in range(6000):
            if condition():
                break
            time.sleep(0.01)
        gate.open()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def _submit_in_order(batcher, gate, pool, jobs):
    """Submit ``(rows, key)`` jobs from pool threads, the first alone (held in ``gate``), each of the
    others queued before the next is submitted; returns their futures."""
    futures = [pool.submit(batcher.submit, *jobs[0])]
    while not gate.calls:
        time.sleep(0.005)
    for job in jobs[1:]:
        before = batcher.submitted
        futures.append(pool.submit(batcher.submit, *job))
        while batcher.submitted == before:
            time.sleep(0.005)
    return futures


def test_batcher_joins_rows_of_waiting_threads_and_returns_each_its_own():
    gate = Gate(lambda x, key: x * 10)
    batcher = MicroBatcher(gate, window_s=0.0, max_rows=64)
    try:
        inputs = [np.full((n, 2), i, np.float32) for i, n in enumerate([1, 2, 3, 1, 2])]
        _open_when(gate, lambda: batcher.submitted == len(inputs))
        with ThreadPoolExecutor(len(inputs)) as pool:
            futures = _submit_in_order(batcher, gate, pool, [(x,) for x in inputs])
            outs = [f.result(30) for f in futures]
        for x, out in zip(inputs, outs):
            np.testing.assert_array_equal(out, x * 10)
        assert gate.calls == [1, 8]  # the four that waited went through in one call
        assert (batcher.calls, batcher.rows, batcher.submitted) == (2, 9, 5)
    finally:
        batcher.close()


def test_batcher_keeps_batches_within_max_rows_and_to_one_key_in_order():
    gate = Gate(lambda x, key: x + (100 if key == "b" else 0))
    batcher = MicroBatcher(gate, window_s=0.0, max_rows=4)
    try:
        jobs = [(1, "a"), (3, "a"), (2, "b"), (3, "a"), (1, "a"), (2, "b"), (2, "a"), (4, "a")]
        _open_when(gate, lambda: batcher.submitted == len(jobs))
        with ThreadPoolExecutor(len(jobs)) as pool:
            futures = _submit_in_order(batcher, gate, pool, [(np.full((n, 1), i), k) for i, (n, k) in enumerate(jobs)])
            for f, (i, (n, k)) in zip(futures, enumerate(jobs)):
                np.testing.assert_array_equal(f.result(30), np.full((n, 1), i + (100 if k == "b" else 0)))
        # after the held first call: the oldest waiting ("a", 3) with the "a"s that fit behind it in
        # order (3 + 3 > 4: alone); then the "b"s (2 + 2); then "a" 3 + 1; then 2 (2 + 4 > 4); then 4
        assert list(zip(gate.calls, gate.keys)) == [(1, "a"), (3, "a"), (4, "b"), (4, "a"), (2, "a"), (4, "a")]
    finally:
        batcher.close()


def test_batcher_does_not_wait_when_no_one_else_is_coming():
    calls = []
    batcher = MicroBatcher(lambda x, key: calls.append(len(x)) or x, window_s=600.0, expected=lambda: 0)
    try:
        t = threading.Thread(target=batcher.submit, args=(np.ones((2, 3)),))
        t.start()
        t.join(60)  # with others expected it would wait its 600 s window
        assert not t.is_alive() and calls == [2]
    finally:
        batcher.close()


def test_batcher_errors_reach_every_caller_and_the_batcher_goes_on():
    state = {"fail": True}

    def fn(x, key):
        if state["fail"]:
            state["fail"] = False
            raise ValueError("backend broke")
        return x[:-1] if len(x) == 3 else x  # a wrong number of rows for a batch of 3

    batcher = MicroBatcher(fn, window_s=0.0)
    try:
        with pytest.raises(ValueError, match="backend broke"):
            batcher.submit(np.ones((1, 2)))
        with pytest.raises(ValueError, match="returned 2 rows for 3"):
            batcher.submit(np.ones((3, 2)))
        np.testing.assert_array_equal(batcher.submit(np.ones((2, 2))), np.ones((2, 2)))
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(np.ones((1, 2)))
    with pytest.raises(ValueError, match="max_rows"):
        MicroBatcher(fn, max_rows=0)


# -- uploads ---------------------------------------------------------------------------------------------
def test_decode_upload_reads_images_and_refuses_bad_ones_with_their_status(photos, monkeypatch):
    arr = decode_upload(_bytes(photos, "astronaut"))
    np.testing.assert_array_equal(arr, skdata.astronaut())
    assert decode_upload(_bytes(photos, "blank")).shape == (120, 160)

    # EXIF orientation 6 (turned 90 degrees clockwise to view): the array comes upright
    buf = io.BytesIO()
    img = Image.fromarray(np.arange(6 * 4, dtype=np.uint8).reshape(4, 6))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(buf, format="PNG", exif=exif)
    np.testing.assert_array_equal(decode_upload(buf.getvalue()), np.rot90(np.asarray(img), -1))

    def refused(data, status, **kw):
        with pytest.raises(RequestError) as info:
            decode_upload(data, **kw)
        assert info.value.status == status and "\n" not in info.value.message
        return info.value.message

    assert "no image" in refused(b"", 400)
    assert "not an image" in refused(b"this is not a PNG", 422)
    assert "cannot decode" in refused(_bytes(photos, "astronaut")[:5000], 422)  # truncated
    # the pixel cap is checked on the header, before any decoding
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("a bomb was decoded"))
    msg = refused(_png_header_only(9_000, 9_000), 422, max_pixels=40_000_000)
    assert "9000 x 9000 = 81,000,000 pixels" in msg and "40,000,000" in msg
    # and PIL's own cap (2 x Image.MAX_IMAGE_PIXELS) is refused the same way, whatever ours is
    assert "too large" in refused(_png_header_only(100_000, 100_000), 422, max_pixels=10**12)
    assert "40 x 40 = 1,600 pixels" in refused(_png(np.zeros((40, 40), np.uint8)), 422, max_pixels=1_000)


# -- the app -----------------------------------------------------------------------------------------------
@pytest.fixture
def make_client(rec):
    """``make_client(**app_options)`` -> a TestClient of a fresh Service of ``rec`` (closed after the test)."""
    clients = []

    def make(service_options=None, **app_options):
        service = Service(rec, **{"workers": 2, **(service_options or {})})
        client = TestClient(create_app(service, **app_options))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def test_predict_gives_the_records_of_dicc_predict_json(make_client, ckpt, photos, capsys):
    client = make_client()
    assert main(["predict", str(ckpt), str(photos["group"]), str(photos["astronaut"]), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    want = {name: [r for r in cli if Path(r["file"]).stem == name] for name in ("group", "astronaut")}
    assert [len(v) for v in want.values()] == [3, 1]

    resp = client.post("/predict", files={"image": ("group.png", _bytes(photos, "group"), "image/png")})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [f["file"] for f in body["faces"]] == ["group.png"] * 3
    _assert_same_faces(_faces_without_file(body["faces"]), _faces_without_file(want["group"]))
    assert body["image"] == {"width": 645, "height": 215}
    assert (body["detector"], body["tta"], body["align"]) == ("haar", "none", "rotate")
    assert body["time_ms"] > 0

    raw = client.post("/predict", content=_bytes(photos, "astronaut"), headers={"Content-Type": "image/png"})
    assert raw.status_code == 200
    assert [f["file"] for f in raw.json()["faces"]] == ["upload"]
    _assert_same_faces(_faces_without_file(raw.json()["faces"]), _faces_without_file(want["astronaut"]))

    blank = client.post("/predict", content=_bytes(photos, "blank"))
    assert blank.status_code == 200 and blank.json()["faces"] == []


def test_query_options_change_the_answer_as_the_recognizer_would(make_client, ckpt, photos):
    client = make_client()
    image = decode_upload(_bytes(photos, "astronaut"))
    resp = client.post("/predict?tta=flip&align=box", content=_bytes(photos, "astronaut"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["tta"], body["align"]) == ("flip", "box")
    ref = Recognizer.from_checkpoint(ckpt, device="cpu", tta="flip", align="box")(image)
    got = body["faces"][0]
    assert got["box"] == ref[0]["box"] and got["dominant"] == ref[0]["dominant"]
    np.testing.assert_allclose(list(got["emotions"].values()), list(ref[0]["emotions"].values()), atol=2e-6)
    plain = client.post("/predict", content=_bytes(photos, "astronaut")).json()["faces"][0]
    assert max(abs(plain["emotions"][k] - got["emotions"][k]) for k in EMOTIONS) > 1e-4  # the flip mattered

    _assert_error(client.post("/predict?detector=yolo", content=b"x"), 400, "detector", "haar, mtcnn")
    _assert_error(client.post("/predict?tta=many", content=b"x"), 400, "tta", "none, flip, crops")
    _assert_error(client.post("/predict?colour=1", content=b"x"), 400, "unknown query parameter 'colour'")


def test_an_onnx_model_serves_the_answers_of_its_checkpoint(make_client, ckpt, photos, tmp_path):
    pytest.importorskip("onnxruntime")
    from dicc.export import export_onnx

    export_onnx(ckpt, tmp_path / "m.onnx")
    image = _bytes(photos, "group")
    with TestClient(create_app(Service(Recognizer.load(tmp_path / "m.onnx"), workers=2))) as client:
        assert client.get("/health").json()["model"] == "m.onnx"
        onnx_faces = client.post("/predict?tta=flip", content=image).json()["faces"]
    pt_faces = make_client().post("/predict?tta=flip", content=image).json()["faces"]
    assert len(onnx_faces) == 3
    _assert_same_faces(onnx_faces, pt_faces, atol=1e-4)


def test_health_page_and_unknown_routes(make_client):
    client = make_client()
    info = client.get("/health").json()
    assert info["classes"] == list(EMOTIONS) and info["version"] == dicc.__version__
    assert info["model"] == "ce.pt" and info["status"] == "ok"  # the file's name, not where it lies
    assert info["defaults"] == {"detector": "haar", "tta": "none", "align": "rotate"}
    assert info["max_bytes"] == 10 * 1024 * 1024 and info["token"] is False
    assert info["batching"] == {"window_ms": 5.0, "batches": 0, "faces": 0}

    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert "getUserMedia" in html and 'fetch("health"' in html and "predict?" in html
    # offline: nothing from elsewhere (no absolute addresses, no external script, style or font)
    assert "://" not in html and 'src="//' not in html and 'href="' not in html
    assert "<script src" not in html and "<link" not in html and "@import" not in html and "url(" not in html

    _assert_error(client.get("/nope"), 404, "/nope", "POST /predict")
    _assert_error(client.get("/predict"), 405, "use POST")


def test_bad_uploads_get_one_line_json_errors_and_the_server_goes_on(make_client, photos):
    client = make_client(max_bytes=50_000)
    good = _bytes(photos, "group")  # ~200 kB, over this app's 50 kB cap
    astronaut_small = _jpeg(skdata.astronaut()[::2, ::2])
    assert len(good) > 50_000 > len(astronaut_small)
    _assert_error(client.post("/predict", content=good), 413, "50,000")
    # without a Content-Length (chunked): refused while reading
    _assert_error(client.post("/predict", content=iter([good[:30_000], good[30_000:]])), 413, "50,000")
    _assert_error(client.post("/predict", files={"image": ("g.png", good)}), 413)
    _assert_error(client.post("/predict", content=b"\x89PNG not really"), 422, "cannot decode")
    _assert_error(client.post("/predict", content=astronaut_small[: len(astronaut_small) // 2]), 422, "cannot decode")
    _assert_error(client.post("/predict", content=_png_header_only(9_000, 9_000)), 422, "pixels")
    _assert_error(client.post("/predict", content=b""), 400, "no image")
    _assert_error(client.post("/predict", files={"photo": ("a.png", astronaut_small)}), 400, "'image' is missing")
    text_field = client.post("/predict", data={"image": "not a file"}, files={"other": ("b.png", b"x")})
    _assert_error(text_field, 400, "must be a file")
    _assert_error(
        client.post("/predict", content=b"--x\r\nbroken", headers={"Content-Type": "multipart/form-data; boundary=x"}),
        400,
    )
    ok = client.post("/predict", files={"image": ("a.jpg", astronaut_small, "image/jpeg")})
    assert ok.status_code == 200 and len(ok.json()["faces"]) == 1


def test_a_client_that_goes_away_mid_upload_is_not_an_error_of_the_server(rec, caplog):
    import asyncio

    app = create_app(Service(rec, workers=1))
    messages = iter([{"type": "http.request", "body": b"\x89PNG half", "more_body": True}, {"type": "http.disconnect"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "headers": [(b"content-type", b"image/png")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }
    try:
        asyncio.run(app(scope, receive, send))
    finally:
        app.state.service.close()
    assert sent[0]["status"] == 400 and b"disconnected" in sent[1]["body"]
    assert "Traceback" not in caplog.text and "failed" not in caplog.text


def test_a_failing_model_gives_a_500_without_a_traceback_and_the_next_request_works(rec, photos, caplog):
    inner, state = rec.backend, {"calls": 0}

    def flaky(x):
        state["calls"] += 1
        if state["calls"] == 1:
            raise RuntimeError("CUDA out of memory (pretend)")
        return inner(x)

    rec.backend = flaky
    with TestClient(create_app(Service(rec, workers=1))) as client:
        body = _assert_error(client.post("/predict", content=_bytes(photos, "astronaut")), 500, "internal error")
        assert "CUDA" not in body["error"]
        assert "CUDA out of memory" in caplog.text  # the server's log has it
        assert client.post("/predict", content=_bytes(photos, "astronaut")).status_code == 200


def test_concurrent_requests_are_batched_and_agree_with_one_at_a_time(rec, photos):
    gate = Gate(rec.backend)
    rec.backend = gate
    service = Service(rec, workers=8, window_ms=5.0)
    names = ["astronaut", "group"] * 4  # 1 + 3 faces each: 16 faces
    with TestClient(create_app(service)) as client:
        _open_when(gate, lambda: service.batcher.submitted == len(names))
        with ThreadPoolExecutor(len(names)) as pool:
            answers = list(pool.map(lambda n: client.post("/predict", content=_bytes(photos, n)), names))
        assert [a.status_code for a in answers] == [200] * len(names)
        # the first call held the batcher until every request had submitted its faces: the rest
        # (all the faces of the requests not in the first call) went through one call
        assert len(gate.calls) == 2 and sum(gate.calls) == 16
        one_at_a_time = [client.post("/predict", content=_bytes(photos, n)) for n in names]
        assert len(gate.calls) == 2 + len(names)
        batching = client.get("/health").json()["batching"]
        assert (batching["batches"], batching["faces"]) == (2 + len(names), 32)
    for a, b in zip(answers, one_at_a_time):
        _assert_same_faces(a.json()["faces"], b.json()["faces"])
    assert [len(a.json()["faces"]) for a in answers] == [1, 3] * 4


def test_a_full_service_answers_503(rec, photos):
    gate = Gate(rec.backend)
    rec.backend = gate
    service = Service(rec, workers=1, max_queue=1)
    with TestClient(create_app(service)) as client:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.post, "/predict", content=_bytes(photos, "astronaut"))
            while not gate.calls:
                time.sleep(0.005)
            _assert_error(client.post("/predict", content=_bytes(photos, "astronaut")), 503, "busy")
            gate.open()
            assert first.result(60).status_code == 200
        assert client.post("/predict", content=_bytes(photos, "astronaut")).status_code == 200


def test_token_is_required_on_the_api_when_given(make_client, photos):
    client = make_client(token="s3cret")
    image = _bytes(photos, "astronaut")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        r = client.post("/predict", content=image, headers=headers)
        _assert_error(r, 401, "bearer token")
        assert r.headers["www-authenticate"] == "Bearer"
        _assert_error(client.get("/health", headers=headers), 401)
    auth = {"Authorization": "Bearer s3cret"}
    assert client.post("/predict", content=image, headers=auth).status_code == 200
    assert client.get("/health", headers=auth).json()["token"] is True
    assert client.get("/").status_code == 200  # the page is static; it sends the token itself


# -- the command ---------------------------------------------------------------------------------------------
def test_cli_refuses_bad_options_in_one_line(ckpt, capsys):
    for argv, words in (
        (["--workers", "0"], "--workers must be >= 1"),
        (["--port", "70000"], "--port must be in 0..65535"),
        (["--max-bytes", "0"], "--max-bytes must be >= 1"),
        (["--token", " "], "--token is empty"),
    ):
        assert main(["serve", str(ckpt), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("dicc serve: error: ") and words in err and err.count("\n") == 1
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", str(ckpt), "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"dicc serve: error: cannot listen on 127.0.0.1:{port}: ") and err.count("\n") == 1
    assert main(["serve", str(ckpt.with_name("missing.pt"))]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_cli_warns_when_listening_beyond_loopback_without_a_token(ckpt, capsys, monkeypatch):
    import uvicorn

    import dicc.serve.cli as serve_cli

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(self.config.app))
    monkeypatch.setattr(serve_cli, "listen", lambda host, port: socket.create_server(("127.0.0.1", 0)))
    assert main(["serve", str(ckpt), "--host", "0.0.0.0", "--workers", "1"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("dicc serve: http://127.0.0.1:") and "1 workers" in out
    assert "warning: listening on 0.0.0.0 with no authentication" in err and "--token" in err
    monkeypatch.setenv("DICC_SERVE_TOKEN", "from-env")
    assert main(["serve", str(ckpt), "--host", "0.0.0.0", "--workers", "1"]) == 0
    out, err = capsys.readouterr()
    assert "bearer token required" in out and "warning" not in err
    assert len(served) == 2
    for app in served:  # uvicorn never ran the apps' lifespans here: close their services
        app.state.service.close()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.5.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("example.org")


# -- the real server, over HTTP --------------------------------------------------------------------------------
def _http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _multipart(field: str, filename: str, data: bytes) -> tuple[bytes, dict]:
    boundary = "dicc-test-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_the_real_server_over_http(ckpt, photos, tmp_path):
    proc, url = start_server([str(ckpt), "--workers", "3", "--max-bytes", "300000"], tmp_path / "server.log")
    try:
        assert url.startswith("http://127.0.0.1:")
        status, info = _http("GET", url + "/health")
        assert status == 200 and info["classes"] == list(EMOTIONS) and info["workers"] == 3
        astronaut = _jpeg(skdata.astronaut())
        status, one = _http("POST", url + "/predict", astronaut, {"Content-Type": "image/jpeg"})
        assert status == 200 and len(one["faces"]) == 1
        body, headers = _multipart("image", "group.png", _bytes(photos, "group"))
        status, three = _http("POST", url + "/predict", body, headers)
        assert status == 200 and [f["file"] for f in three["faces"]] == ["group.png"] * 3
        # refused requests, then the server still answers
        assert _http("POST", url + "/predict", b"not an image")[0] == 422
        assert _http("POST", url + "/predict", b"\0" * 400_000)[0] == 413
        assert _http("POST", url + "/predict", _png_header_only(9_000, 9_000))[0] == 422
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: _http("POST", url + "/predict", astronaut), range(8)))
        assert all(s == 200 for s, _ in answers)
        for _, a in answers:
            _assert_same_faces(a["faces"], one["faces"])
    finally:
        code = stop_server(proc)
    log = (tmp_path / "server.log").read_text()
    assert code == 130 and "Traceback" not in log, log
    assert log.strip().endswith("dicc serve: interrupted")
