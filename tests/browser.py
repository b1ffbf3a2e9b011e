"""A real browser for the report's tests: Debian's headless Chromium over the DevTools protocol.

The protocol runs over a pipe (``--remote-debugging-pipe``: commands on fd 3,
replies and events on fd 4, each message a JSON object ended by a NUL byte), so
nothing is listening on a port and no websocket client is needed: stdlib only.
:func:`load` opens a page, waits for its load event, and returns what happened:
console errors, uncaught exceptions, log errors (a Content Security Policy
violation is one), every request with its URL, failed loads, and the figures'
sizes and screenshots.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The flags the machine notes require for Chromium in a sandboxed, offline container.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
)  # fmt: skip

#: Reads the page: every <img> with its natural and laid-out size and its place in the page.
FIGURES_JS = """JSON.stringify([...document.images].map(img => {
  const r = img.getBoundingClientRect();
  return {figure: img.dataset.figure || null, complete: img.complete,
          natural: [img.naturalWidth, img.naturalHeight],
          rect: [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]};
}))"""


def chromium() -> str | None:
    """The Chromium binary (Debian's ``chromium``), or None when it is not installed."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageLoad:
    """What loading one page did."""

    url: str
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)
    #: figure name -> PNG bytes of the page's pixels where that figure is laid out
    shots: dict[str, bytes] = field(default_factory=dict)
    page_png: bytes | None = None
    seconds: float = 0.0


class _Pipe:
    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int) -> None:
        self.proc, self.w, self.r = proc, to_browser, from_browser
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        seen = len(self.events)
        while time.monotonic() < end:
            if any(e.get("method") == method for e in self.events[seen:]):
                return
            self.events.append(self._read(end - time.monotonic()))
        raise TimeoutError(f"no {method} within {timeout} s")

    def _read(self, timeout: float = 30.0) -> dict:
        import select

        while b"\0" not in self.buf:
            ready, _, _ = select.select([self.r], [], [], max(timeout, 0.01))
            if not ready:
                raise TimeoutError("the browser stopped answering")
            chunk = os.read(self.r, 1 << 20)
            if not chunk:
                raise RuntimeError("the browser closed the pipe")
            self.buf += chunk
        raw, _, self.buf = self.buf.partition(b"\0")
        return json.loads(raw)


def load(url: str, *, width: int = 1400, height: int = 1000, timeout: float = 40.0) -> PageLoad:
    """Open ``url`` in a fresh headless Chromium profile and record what happened."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("chromium is not installed")
    t0 = time.monotonic()
    to_r, to_w = os.pipe()  # we write commands, the browser reads them on fd 3
    from_r, from_w = os.pipe()  # the browser writes on fd 4, we read

    def child_fds() -> None:  # in the child, before exec: the pipe ends become fds 3 and 4
        import fcntl

        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_r, from_w)]
        os.dup2(high[0], 3)  # inheritable: they survive the exec
        os.dup2(high[1], 4)

    with tempfile.TemporaryDirectory(prefix="hadis-chromium-") as profile:
        proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child_fds, close_fds=False,
        )  # fmt: skip
        os.close(to_r)
        os.close(from_w)
        pipe = _Pipe(proc, to_w, from_r)
        try:
            return _drive(pipe, url, width, height, timeout, t0)
        finally:
            with contextlib.suppress(OSError, RuntimeError, TimeoutError):
                pipe.send("Browser.close")
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(to_w)
            os.close(from_r)


def _drive(pipe: _Pipe, url: str, width: int, height: int, timeout: float, t0: float) -> PageLoad:
    target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    sid = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Runtime", "Log", "Network", "Page"):
        pipe.send(f"{domain}.enable", session=sid)
    pipe.send("Emulation.setDeviceMetricsOverride",
              {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
              session=sid)  # fmt: skip
    start = len(pipe.events)
    pipe.send("Page.navigate", {"url": url}, session=sid)
    pipe.wait_for("Page.loadEventFired", timeout)
    res = pipe.send("Runtime.evaluate", {"expression": FIGURES_JS, "returnByValue": True},
                    session=sid)  # fmt: skip
    out = PageLoad(url=url, figures=json.loads(res["result"]["value"]))
    for f in out.figures:
        x, y, w, h = f["rect"]
        if f["figure"] and w > 0 and h > 0:
            clip = {"x": x, "y": y, "width": w, "height": h, "scale": 1}
            shot = pipe.send("Page.captureScreenshot",
                             {"format": "png", "clip": clip, "captureBeyondViewport": True},
                             session=sid)  # fmt: skip
            out.shots[f["figure"]] = base64.b64decode(shot["data"])
    metrics = pipe.send("Page.getLayoutMetrics", session=sid)["cssContentSize"]
    full = {"x": 0, "y": 0, "width": metrics["width"], "height": min(metrics["height"], 16000),
            "scale": 1}  # fmt: skip
    shot = pipe.send(
        "Page.captureScreenshot",
        {"format": "png", "clip": full, "captureBeyondViewport": True},
        session=sid,
    )
    out.page_png = base64.b64decode(shot["data"])
    for e in pipe.events[start:]:
        m, p = e.get("method"), e.get("params", {})
        if m == "Network.requestWillBeSent":
            out.requests.append(p["request"]["url"])
        elif m == "Network.loadingFailed":
            out.failed.append(f"{p.get('type')}: {p.get('errorText')} {p.get('blockedReason', '')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            out.console_errors.append(" ".join(str(a.get("value")) for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            out.exceptions.append(p["exceptionDetails"].get("text", "exception"))
        elif m == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
            out.log_errors.append(f"{p['entry'].get('source')}: {p['entry']['text']}")
    out.seconds = time.monotonic() - t0
    return out


def blank(png: bytes) -> bool:
    """True when a screenshot is (nearly) one colour: nothing was drawn there."""
    import io

    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    if a.size == 0:
        return True
    most = np.bincount(a.astype(np.uint8).ravel()).max() / a.size
    return a.std() < 2.0 or most > 0.995


def file_url(path: Path) -> str:
    return path.resolve().as_uri()
