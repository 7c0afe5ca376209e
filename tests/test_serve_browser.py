"""``dicc serve``'s page in a real browser: Debian's Chromium, headless, with a fake camera that plays a
video made from a real photo; the page must draw a face box with an emotion label and bars over it.

Chromium is driven through ChromeDriver's W3C WebDriver protocol with the standard library's HTTP
client (a handful of JSON requests): Debian's `chromium-driver` package matches its `chromium`
exactly, and no Python package nor browser download is needed. Skipped where either is absent
(`apt-get install chromium chromium-driver`). With ``DICC_SERVE_SCREENSHOT=docs/serve-page.png``
the test also writes its screenshot there (how the one in ``docs/`` was made).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="dicc serve needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

from dicc import EMOTIONS  # noqa: E402

from helpers import start_server, stop_server  # noqa: E402

CHROMIUM = os.environ.get("DICC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = os.environ.get("DICC_CHROMEDRIVER") or shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Chromium and ChromeDriver: apt-get install chromium chromium-driver "
    f"(found chromium={CHROMIUM}, chromedriver={CHROMEDRIVER})",
)

# headless as root on a machine without a network: no sandbox, no GPU, none of Chromium's own
# connections (they would be refused, many at a time); the camera is a file
CLOSED_NETWORK_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
]
WINDOW = (1000, 860)


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """RGB ``uint8`` frames (even width and height) as a YUV4MPEG2 video, 4:2:0, BT.601 limited range."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            r, g, b = (frame[..., i].astype(np.float64) for i in range(3))
            y = 16 + 0.256788 * r + 0.504129 * g + 0.097906 * b
            cb = 128 - 0.148223 * r - 0.290993 * g + 0.439216 * b
            cr = 128 + 0.439216 * r - 0.367788 * g - 0.071427 * b

            def plane(p, sub):
                if sub:
                    p = p.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
                return np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes()

            f.write(b"FRAME\n" + plane(y, False) + plane(cb, True) + plane(cr, True))
    return path


def test_write_y4m_is_the_format_chromium_reads(tmp_path):
    frames = [np.full((4, 6, 3), v, np.uint8) for v in (0, 255)]
    data = write_y4m(tmp_path / "t.y4m", frames).read_bytes()
    header, rest = data.split(b"\n", 1)
    assert header == b"YUV4MPEG2 W6 H4 F10:1 Ip A1:1 C420jpeg"
    frame_size = len(b"FRAME\n") + 6 * 4 + 2 * (3 * 2)
    assert len(rest) == 2 * frame_size and rest.startswith(b"FRAME\n")
    # black is Y 16, white Y 235, gray chroma 128 (BT.601 limited range)
    assert set(rest[6 : 6 + 24]) == {16} and set(rest[6 + 24 : frame_size]) == {128}
    assert set(rest[frame_size + 6 : frame_size + 30]) == {235}


class WebDriver:
    """The few W3C WebDriver commands this test needs, over HTTP to a ChromeDriver."""

    def __init__(self, url: str) -> None:
        self.url, self.session = url, None

    def call(self, method: str, path: str, payload=None):
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as err:
            value = json.loads(err.read()).get("value", {})
            raise AssertionError(f"WebDriver {method} {path}: {value.get('error')}: {value.get('message')}") from None

    def start(self, binary: str, args: list[str]) -> None:
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": binary, "args": args}}
        self.session = self.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def _s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def get(self, url: str) -> None:
        self.call("POST", self._s("/url"), {"url": url})

    def js(self, script: str, *args):
        return self.call("POST", self._s("/execute/sync"), {"script": script, "args": list(args)})

    def element(self, css: str) -> str:
        found = self.call("POST", self._s("/element"), {"using": "css selector", "value": css})
        return next(iter(found.values()))

    def click(self, css: str) -> None:
        self.call("POST", self._s(f"/element/{self.element(css)}/click"), {})

    def type(self, css: str, text: str) -> None:
        self.call("POST", self._s(f"/element/{self.element(css)}/value"), {"text": text})

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("GET", self._s("/screenshot")))

    def quit(self) -> None:
        if self.session:
            try:
                self.call("DELETE", self._s(""))
            finally:
                self.session = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium whose camera plays a video of the astronaut's head, moving a little."""
    astronaut = skdata.astronaut()
    frames = [np.ascontiguousarray(astronaut[0:384, 4 * i : 4 * i + 472]) for i in range(8)]
    frames += frames[::-1]  # back and forth, so the loop has no jump
    clip = write_y4m(tmp_path / "clip.y4m", frames)
    port = _free_port()
    log = open(tmp_path / "chromedriver.log", "w")
    driver_proc = subprocess.Popen(
        [CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"], stdout=log, stderr=subprocess.STDOUT
    )
    wd = WebDriver(f"http://127.0.0.1:{port}")
    try:
        for _ in range(300):  # until ChromeDriver answers (at most ~30 s)
            try:
                if wd.call("GET", "/status").get("ready"):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.1)
        wd.start(
            CHROMIUM,
            CLOSED_NETWORK_FLAGS
            + [
                f"--user-data-dir={tmp_path / 'profile'}",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={clip}",
            ],
        )
        yield wd
    finally:
        wd.quit()
        driver_proc.terminate()
        try:
            driver_proc.wait(30)
        except subprocess.TimeoutExpired:
            driver_proc.kill()
        log.close()


# the faces the page drew: dominant emotion, label text, number of bars, box on the screen
FACES = """Array.from(document.querySelectorAll('#overlay .face')).map(f => {
  const r = f.getBoundingClientRect();
  return {dominant: f.dataset.dominant, label: f.querySelector('.label').textContent,
          bars: f.querySelectorAll('.bars .row').length, rect: [r.left, r.top, r.width, r.height]};
})"""


def _wait_for(wd: WebDriver, script: str, what: str, tries: int = 600):
    """Poll ``script`` until it returns something truthy (at most ``tries`` x 0.1 s)."""
    for _ in range(tries):
        value = wd.js(script)
        if value:
            return value
        time.sleep(0.1)
    status = wd.js("return document.getElementById('status').textContent")
    raise AssertionError(f"the page never showed {what}; its status line: {status!r}")


def test_page_draws_boxes_and_emotions_over_the_live_camera(browser, tmp_path):
    proc, url = start_server(["default", "--workers", "2"], tmp_path / "server.log")
    try:
        browser.get(url + "/")
        model = _wait_for(
            browser,
            "const t = document.getElementById('model').textContent; return t.startsWith('model') ? t : null",
            "the model's name",
        )
        assert model.startswith("model default · 7 classes · dicc ")

        browser.click("#start")
        faces = _wait_for(browser, f"return {FACES}", "a face box over the camera")
        video = browser.js(
            "const v = document.getElementById('video'); const r = v.getBoundingClientRect();"
            "return {w: v.videoWidth, h: v.videoHeight, playing: !v.paused, rect: [r.left, r.top, r.width, r.height]}"
        )
        assert (video["w"], video["h"], video["playing"]) == (472, 384, True)  # the clip's frames, live
        assert len(faces) == 1
        face = faces[0]
        name, pct = face["label"].split()
        assert name == face["dominant"] and name in EMOTIONS and pct.endswith("%")
        assert face["bars"] == len(EMOTIONS)
        # the box sits on the astronaut's face: x about 177 - 4 * (0..7), y 66, 95 wide in the 472x384 frames
        vx, vy, vw, vh = video["rect"]
        fx, fy, fw, fh = face["rect"]
        s = vw / 472
        assert abs((fx - vx) / s - 163) < 30 and abs((fy - vy) / s - 66) < 30 and 60 < fw / s < 140
        # several frames answered, one at a time
        _wait_for(
            browser,
            "return /([3-9]|\\d\\d+) frame\\(s\\) answered/.test(document.getElementById('status').textContent)",
            "three answered frames",
        )
        shot = browser.screenshot()
        (tmp_path / "serve-page.png").write_bytes(shot)
        with Image.open(tmp_path / "serve-page.png") as im:
            assert im.size == WINDOW or im.size[0] == WINDOW[0]
        target = os.environ.get("DICC_SERVE_SCREENSHOT")
        if target:
            tmp = Path(target).with_name(f".{Path(target).name}.tmp")
            tmp.write_bytes(shot)
            os.replace(tmp, target)

        # a photo instead of the camera: three faces
        astronaut = skdata.astronaut()
        crop = astronaut[6:221, 117:332]
        group = tmp_path / "group.png"
        Image.fromarray(np.ascontiguousarray(np.concatenate([crop, crop[:, ::-1], crop], axis=1))).save(group)
        browser.type("#file", str(group))
        three = _wait_for(browser, f"const f = {FACES}; return f.length === 3 ? f : null", "three faces in the photo")
        assert all(f["label"].split()[0] in EMOTIONS for f in three)
        assert browser.js("return document.getElementById('video').hidden") is True
    finally:
        code = stop_server(proc)
    log = (tmp_path / "server.log").read_text()
    assert code == 130 and "Traceback" not in log, log
