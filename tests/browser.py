"""A headless Chromium driven over the DevTools protocol (``--remote-debugging-pipe``), for tests.

No websocket library and no port: Chromium reads commands from fd 3 and writes replies and events
to fd 4, each JSON message ended by a NUL byte. :func:`open_page` loads one page and returns what
a test checks: every request the page made, console errors and exceptions, and screenshots.

    with Browser() as b:
        seen = b.open_page(Path("report.html"), shots={"top": Path("top.png")})
"""

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    """Path of a Chromium binary ($MOCAP_CHROMIUM, then the usual names on PATH), or None."""
    env = os.environ.get("MOCAP_CHROMIUM")
    if env:
        return env
    return next((p for p in map(shutil.which, NAMES) if p), None)


def _high_fd(fd: int) -> int:
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


@dataclass
class PageResult:
    """What loading one page did."""

    url: str
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, error logs
    title: str = ""

    def network_requests(self) -> list[str]:
        """Requests that leave the file: anything but ``data:`` URIs and the page itself."""
        return [u for u in self.requests if not u.startswith("data:") and u != self.url]


class Browser:
    """One headless Chromium process; a fresh profile in a temporary folder."""

    def __init__(self, binary: str | None = None, width: int = 1200, height: int = 900) -> None:
        binary = binary or find_chromium()
        if binary is None:
            raise RuntimeError("no Chromium found; apt-get install chromium or set MOCAP_CHROMIUM")
        self.width, self.height = width, height
        self.profile = tempfile.mkdtemp(prefix="mocap-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # the child's ends above fd 9, so that moving them onto fds 3 and 4 clobbers nothing
        to_child_r, from_child_w = (_high_fd(fd) for fd in (to_child_r, from_child_w))

        args = [
            binary, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions",
            "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
            f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank",
        ]  # fmt: skip

        def plumb() -> None:  # in the child: commands on fd 3, replies on fd 4 (inherited)
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        log = os.environ.get("MOCAP_CHROMIUM_LOG")  # Chromium's own messages, for debugging
        self._log = open(log, "wb") if log else None  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            args,
            preexec_fn=plumb,
            close_fds=False,  # Python's own fds are close-on-exec anyway; 3 and 4 must stay
            stdout=subprocess.DEVNULL,
            stderr=self._log or subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._log:
            self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read(self, deadline: float) -> dict[str, Any] | None:
        """Next message, or None once ``deadline`` (time.monotonic) passed."""
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                return None
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return dict(json.loads(raw))

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:  # fmt: skip
        """Send one command and wait for its result (events meanwhile go to ``self.events``)."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply is None:
                raise RuntimeError(f"no reply to {method} within {timeout} s")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any] | None:
        """Wait for event ``method`` (already received or coming)."""
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        deadline = time.monotonic() + timeout
        while (ev := self._read(deadline)) is not None:
            self.events.append(ev)
            if ev.get("method") == method:
                return ev
        return None

    def open_page(
        self, path: Path, shots: dict[str, Path] | None = None, settle_s: float = 1.0
    ) -> tuple[PageResult, str]:
        """Load ``path`` from disk, then screenshot it: ``shots`` maps "top" (the first screen)
        and/or "full" (the whole page) to PNG files. Returns the result and the session id."""
        url = Path(path).resolve().as_uri()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        sid = session["sessionId"]
        for domain in ("Network", "Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=sid)
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session=sid)
        if self.wait_event("Page.loadEventFired", timeout=60) is None:
            raise RuntimeError(f"{url} did not finish loading")
        end = time.monotonic() + settle_s  # late requests or errors
        while (ev := self._read(end)) is not None:
            self.events.append(ev)
        result = PageResult(url=url)
        for ev in self.events:
            method, p = ev.get("method"), ev.get("params", {})
            if method == "Network.requestWillBeSent":
                result.requests.append(p["request"]["url"])
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                result.errors.append(" ".join(str(a.get("value", a)) for a in p.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                result.errors.append(str(p.get("exceptionDetails", {}).get("text")))
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                result.errors.append(str(p["entry"].get("text")))
        result.title = str(self.evaluate(sid, "document.title"))
        for kind, out in (shots or {}).items():
            params: dict[str, Any] = {"format": "png"}
            if kind == "full":
                size = self.send("Page.getLayoutMetrics", session=sid)["cssContentSize"]
                params |= {
                    "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                             "scale": 1},
                }  # fmt: skip
            data = self.send("Page.captureScreenshot", params, session=sid)["data"]
            Path(out).write_bytes(base64.b64decode(data))
        return result, sid

    def evaluate(self, session: str, expression: str) -> Any:
        """Value of a JavaScript expression in the page."""
        reply = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression}: {reply['exceptionDetails'].get('text')}")
        return reply["result"].get("value")
