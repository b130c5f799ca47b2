"""Open a report page in headless Chromium and say what a reader would see: console errors, the size of every
plot, whether the page scrolls sideways, the headline; optionally a screenshot.

Chromium is driven over its DevTools protocol through ``--remote-debugging-pipe`` (file descriptors 3 and 4,
NUL-terminated JSON, the transport Puppeteer and Playwright use): the standard library is enough, no port is
opened, no browser or driver is downloaded, and any Chromium build that speaks the protocol works (Debian's
``chromium`` package on CI). ``python -m iqa_tune.reports.browser PAGE [--screenshot PNG]`` runs the check.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]

# what the page reports about itself, evaluated in the page once the plots are drawn
PROBE = """(() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')].map(p => {
    const r = p.getBoundingClientRect();
    return {id: p.id, width: r.width, height: r.height, drawn: !!p.querySelector('.main-svg')};
  });
  const ranking = document.querySelector('#ranking table');
  return {
    plots,
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    rankingWidth: ranking ? ranking.getBoundingClientRect().right : null,
    headline: (document.querySelector('#headline') || {}).innerText || '',
    title: document.title,
  };
})()"""


def find_chromium() -> str | None:
    """The Chromium binary: $CHROMIUM, else the first of the usual names on PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((p for n in CHROMIUM_NAMES if (p := shutil.which(n))), None)


@dataclass
class PageCheck:
    """What Chromium saw."""

    console_errors: list[str] = field(default_factory=list)
    plots: list[dict] = field(default_factory=list)  # id, width, height, drawn
    scroll_width: int = 0  # of the whole document; above inner_width means a horizontal scrollbar
    inner_width: int = 0
    ranking_right: float | None = None  # right edge of the ranking table, in CSS px
    headline: str = ""
    title: str = ""
    extra: object = None  # what the caller's own expression returned
    requests: list[str] = field(default_factory=list)  # every URL the page asked for

    @property
    def external(self) -> list[str]:
        """Requests that would need a network: the page must work offline."""
        return [u for u in self.requests if not u.startswith(("file:", "data:", "about:", "blob:"))]

    @property
    def problems(self) -> list[str]:
        """Everything a reader would notice, in words (empty: the page is fine)."""
        out = [f"console: {e}" for e in self.console_errors]
        out += [f"plot {p['id']} not drawn ({p['width']:.0f}x{p['height']:.0f} px)" for p in self.plots
                if not (p["drawn"] and p["width"] > 0 and p["height"] > 0)]
        if self.scroll_width > self.inner_width:
            out.append(f"page scrolls sideways: {self.scroll_width} px wide in a {self.inner_width} px window")
        if self.ranking_right is None:
            out.append("no ranking table")
        elif self.ranking_right > self.inner_width:
            out.append(f"ranking ends at {self.ranking_right:.0f} px, past the {self.inner_width} px window")
        if not self.headline.strip():
            out.append("no headline")
        out += [f"fetches {u} (the page must work offline)" for u in self.external]
        return out


class _Pipe:
    """The DevTools protocol over Chromium's debugging pipe: one JSON message per NUL-terminated chunk."""

    def __init__(self, binary: str, width: int, height: int, profile: str):
        # the child's ends are first copied to fds >= 10 (close-on-exec), so that placing them at 3 and 4 cannot
        # overwrite one another, whatever numbers the pipes got here
        r, self._to_chrome = os.pipe()
        self._from_chrome, w = os.pipe()
        to_chrome_r = fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 10)
        from_chrome_w = fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(r)
        os.close(w)

        def place_fds():  # in the child, before exec: dup2 leaves 3 and 4 inheritable
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        cmd = [binary, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}",
               f"--window-size={width},{height}", "about:blank"]
        # close_fds=False: Python's own descriptors are close-on-exec anyway, and closing would take 3 and 4 too
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, close_fds=False, preexec_fn=place_fds)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next = 0
        self.events: list[dict] = []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the debugging pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            e = self._read(deadline)
            if e.get("method") == method:
                return e
            self.events.append(e)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:  # already gone: the kill below is enough
            pass
        for fd in (self._to_chrome, self._from_chrome):
            os.close(fd)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _console_errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        p = e.get("params", {})
        if e.get("method") == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append((d.get("exception") or {}).get("description") or d.get("text", "exception"))
        elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(p["entry"].get("text", ""))
    return out


def check_page(page: Path, width: int = 1400, height: int = 900, screenshot: Path | None = None,
               binary: str | None = None, settle_s: float = 0.5, expression: str | None = None) -> PageCheck:
    """Load ``page`` in headless Chromium ``width`` CSS px wide and probe it; save a full-page PNG if asked.
    ``expression``: JavaScript evaluated after the probe (a test's clicks and reads); its value is ``extra``."""
    binary = binary or find_chromium()
    if not binary:
        raise FileNotFoundError("no Chromium found (install the Debian package chromium, or set $CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="iqa-tune-chromium-") as profile:
        pipe = _Pipe(binary, width, height, profile)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            s = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.call(f"{domain}.enable", session=s)
            pipe.call("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=s)
            pipe.call("Page.navigate", {"url": Path(page).resolve().as_uri()}, session=s)
            pipe.wait_for("Page.loadEventFired", timeout=60)
            time.sleep(settle_s)  # plotly draws on load; let its resize handlers run
            probe = pipe.call("Runtime.evaluate", {"expression": PROBE, "returnByValue": True}, session=s)
            value = probe["result"]["value"]
            extra = None
            if expression:
                extra = pipe.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                       "awaitPromise": True}, session=s)["result"].get("value")
            if screenshot:
                shot = pipe.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                                 session=s, timeout=60)
                Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            errors = _console_errors(pipe.events)
            requests = [e["params"]["request"]["url"] for e in pipe.events
                        if e.get("method") == "Network.requestWillBeSent"]
        finally:
            pipe.close()
    return PageCheck(errors, value["plots"], value["scrollWidth"], value["innerWidth"], value["rankingWidth"],
                     value["headline"], value["title"], extra, requests)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m iqa_tune.reports.browser", description=__doc__.split("\n\n")[0])
    p.add_argument("page", type=Path)
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--screenshot", type=Path)
    args = p.parse_args(argv)
    check = check_page(args.page, args.width, screenshot=args.screenshot)
    print(f"{len(check.plots)} plots, page {check.scroll_width} px wide in {check.inner_width} px")
    for problem in check.problems:
        print(f"problem: {problem}")
    return 1 if check.problems else 0


if __name__ == "__main__":
    sys.exit(main())
