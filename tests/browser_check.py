"""Open pages in headless Chromium and report what a reader's browser console would show.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: NUL-separated
JSON on file descriptors 3 and 4), so the only requirement is Debian's `chromium`; no Python
package beyond the standard library. For each page, `Browser.open_page` returns:

- `errors`: every uncaught exception, `console.error`/`console.assert` call and browser log entry of
  level error (this includes "Failed to load resource"), each as one line of text;
- `failed_loads`: every request answered with a status >= 400, or that failed on the network;
- `foreign`: every request that left the page's origin (an offline book makes none);
- `scripts`: the JavaScript the page fetched: [(url, bytes of the body)];
- `report`: what the page's own `REPORT_JS` expression returned (the DOM checks of tests/test_book.py).

The browser's own request for /favicon.ico, which a page without an icon does not make, is left out.

`Browser(..., width=420)` opens pages as a phone-width screen would; `OVERFLOW_JS` as a page's
report expression, read by `overflow_problems`, says whether anything makes the page wider than
the screen (document.documentElement.scrollWidth > the viewport's width) and where the overflow
starts: the elements that stick out past the screen's right edge while their parent does not.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import subprocess
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars"]

# Waits, inside the page, for every image (lazy ones made eager) and for MathJax's typesetting.
SETTLE_JS = """(async () => {
  const images = [...document.images];
  for (const img of images) { img.loading = "eager"; }
  await Promise.all(images.map(img => img.complete ? null
      : new Promise(done => { img.addEventListener("load", done); img.addEventListener("error", done); })));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  await new Promise(done => setTimeout(done, 300));
  return true;
})()"""


# Horizontal overflow: the page's scroll width against the viewport's, and up to 8 elements where the
# overflow starts (their right edge lies beyond the viewport, their parent's does not); those inside a
# box that scrolls or clips them are listed last, flagged `inside_scroller`.
OVERFLOW_JS = """(() => {
  const viewport = document.documentElement.clientWidth;
  const beyond = el => el.getBoundingClientRect().right > viewport + 1;
  const inScroller = el => {
    // body's and html's overflow belongs to the viewport (CSS overflow propagation): it clips nothing
    for (let a = el.parentElement; a && a !== document.body && a !== document.documentElement; a = a.parentElement) {
      if (getComputedStyle(a).overflowX !== "visible") { return true; }
    }
    return false;
  };
  const offenders = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (el.getBoundingClientRect().width === 0 || !beyond(el) || getComputedStyle(el).position === "fixed") { continue; }
    if (el.parentElement !== document.body && beyond(el.parentElement)) { continue; }
    const name = el.tagName.toLowerCase() + (typeof el.className === "string" && el.className.trim()
                   ? "." + el.className.trim().split(/\\s+/).join(".") : "");
    offenders.push({element: name, right: Math.round(el.getBoundingClientRect().right), inside_scroller: inScroller(el),
                    text: (el.textContent || "").trim().slice(0, 60)});
  }
  offenders.sort((a, b) => a.inside_scroller - b.inside_scroller);
  return {scroll_width: document.documentElement.scrollWidth, viewport: viewport, offenders: offenders.slice(0, 8)};
})()"""


def overflow_problems(report: dict) -> list[str]:
    """One line per problem in an `OVERFLOW_JS` report; empty when the page fits its viewport."""
    if report["scroll_width"] <= report["viewport"]:
        return []
    culprits = "; ".join(f"{o['element']} reaches {o['right']} px{' inside a scrolling box' if o['inside_scroller'] else ''}"
                         f" ({o['text']!r})" for o in report["offenders"])
    return [f"the page is {report['scroll_width']} px wide on a {report['viewport']} px screen"
            + (f": {culprits}" if culprits else "")]


@dataclass
class PageResult:
    url: str
    errors: list[str] = field(default_factory=list)
    failed_loads: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    scripts: list[tuple[str, int]] = field(default_factory=list)
    report: object = None

    @property
    def script_bytes(self) -> int:
        return sum(size for _, size in self.scripts)

    def problems(self) -> list[str]:
        """Everything a reader would see go wrong, one line each (empty for a clean page)."""
        return ([f"console: {e}" for e in self.errors] + [f"failed load: {f}" for f in self.failed_loads]
                + [f"request off the page's origin: {u}" for u in self.foreign])


class DevToolsError(RuntimeError):
    pass


def _move_above(fd: int, lowest: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
    os.close(fd)
    return moved


class Browser:
    """One headless Chromium; each `open_page` uses a fresh tab, closed afterwards."""

    def __init__(self, binary: str, profile_dir, width: int = 1280, height: int = 900):
        self.width, self.height = width, height
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # bash puts the child's ends on fds 3 and 4, where Chromium expects them; moved to fds >= 10
        # first, so that moving one cannot overwrite the other (dash cannot name fds > 9)
        to_browser_r, from_browser_w = (_move_above(fd, 10) for fd in (to_browser_r, from_browser_w))
        script = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        self.proc = subprocess.Popen(
            ["bash", "-c", script, binary, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile_dir}",
             f"--window-size={width},{height}", "about:blank"],
            pass_fds=(to_browser_r, from_browser_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self._events: queue.Queue = queue.Queue()
        self._lock = threading.Condition()
        self._stderr: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr), daemon=True).start()
        self.call("Browser.getVersion", timeout=60)

    # ------------------------------------------------------------------ protocol

    def _read(self) -> None:
        buffer = b""
        with os.fdopen(self._from_browser, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        with self._lock:
                            self._replies[message["id"]] = message
                            self._lock.notify_all()
                    else:
                        self._events.put(message)
        with self._lock:
            self._lock.notify_all()

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        self._next_id += 1
        ident = self._next_id
        message = {"id": ident, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._lock:
            while ident not in self._replies:
                if self.proc.poll() is not None:
                    raise DevToolsError(f"chromium exited ({self.proc.returncode}): "
                                        + b"".join(self._stderr).decode(errors="replace")[-2000:])
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DevToolsError(f"{method}: no answer from chromium within {timeout} s")
                self._lock.wait(min(left, 1.0))
            reply = self._replies.pop(ident)
        if "error" in reply:
            raise DevToolsError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def _drain(self, until, timeout: float) -> list[dict]:
        """Events until `until(event)` is true (or `timeout` seconds); returns every event read."""
        events, deadline = [], time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self._events.get(timeout=min(left, 0.2))
            except queue.Empty:
                if until is None:
                    continue
                if self.proc.poll() is not None:
                    raise DevToolsError(f"chromium exited ({self.proc.returncode})")
                continue
            events.append(event)
            if until is not None and until(event):
                break
        return events

    # ------------------------------------------------------------------ pages

    def open_page(self, url: str, report_js: str | None = None, timeout: float = 60) -> PageResult:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        events: list[dict] = []
        try:
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable", session)
            self.call("Network.setCacheDisabled", session, cacheDisabled=True)
            self.call("Emulation.setDeviceMetricsOverride", session, width=self.width, height=self.height,
                      deviceScaleFactor=1, mobile=False)
            events += self._drain(None, 0.2)  # about:blank's own events
            events.clear()
            navigation = self.call("Page.navigate", session, url=url)
            if navigation.get("errorText"):
                raise DevToolsError(f"{url}: {navigation['errorText']}")
            events += self._drain(lambda e: e.get("sessionId") == session and e["method"] == "Page.loadEventFired",
                                  timeout)
            self.call("Runtime.evaluate", session, timeout=timeout, expression=SETTLE_JS, awaitPromise=True,
                      returnByValue=True)
            report = None
            if report_js:
                result = self.call("Runtime.evaluate", session, expression=report_js, awaitPromise=True,
                                   returnByValue=True)
                if "exceptionDetails" in result:
                    raise DevToolsError(f"{url}: the report expression failed: {result['exceptionDetails']}")
                report = result["result"].get("value")
            events += self._quiet_network(session, events, timeout)
        finally:
            self.call("Target.closeTarget", targetId=target)
        result = summarise(url, [e for e in events if e.get("sessionId") == session])
        result.report = report
        return result

    def _quiet_network(self, session: str, seen: list[dict], timeout: float, quiet: float = 0.5) -> list[dict]:
        """Events until no request of this page has been in flight for `quiet` seconds."""
        pending = set()

        def track(event):
            if event.get("sessionId") != session:
                return
            if event["method"] == "Network.requestWillBeSent":
                pending.add(event["params"]["requestId"])
            elif event["method"] in ("Network.loadingFinished", "Network.loadingFailed"):
                pending.discard(event["params"]["requestId"])

        for event in seen:
            track(event)
        events, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = self._drain(None, quiet)
            for event in batch:
                track(event)
            events += batch
            if not batch and not pending:
                break
        return events

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except DevToolsError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _browser_favicon(event: dict) -> bool:
    params = event.get("params", {})
    request_url = (params.get("request") or params.get("response") or params.get("entry") or {}).get("url", "")
    return urlsplit(request_url).path == "/favicon.ico"


def summarise(url: str, events: list[dict]) -> PageResult:
    """PageResult from one page's DevTools events."""
    result = PageResult(url)
    origin = _origin(url)
    requests, responses, bodies = {}, {}, {}
    favicon = {e["params"]["requestId"] for e in events
               if e["method"] == "Network.requestWillBeSent" and _browser_favicon(e)}
    for event in events:
        method, params = event["method"], event.get("params", {})
        if _browser_favicon(event) or params.get("requestId") in favicon:
            continue
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = (details.get("exception") or {}).get("description") or details.get("text", "")
            result.errors.append(f"uncaught {text.splitlines()[0] if text else 'exception'} "
                                 f"({details.get('url', '?')}:{details.get('lineNumber', '?')})")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            result.errors.append(f"console.{params['type']}: {args}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            result.errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            request_url = params["request"]["url"]
            requests[params["requestId"]] = request_url
            if urlsplit(request_url).scheme not in ("data", "blob", "about") and _origin(request_url) != origin:
                result.foreign.append(request_url)
        elif method == "Network.responseReceived":
            response = params["response"]
            responses[params["requestId"]] = (params.get("type"), response["url"])
            if response["status"] >= 400:
                result.failed_loads.append(f"{response['url']} (HTTP {response['status']})")
        elif method == "Network.dataReceived":
            bodies[params["requestId"]] = bodies.get(params["requestId"], 0) + params["dataLength"]
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            result.failed_loads.append(f"{requests.get(params['requestId'], '?')} ({params.get('errorText')})")
        elif method == "Network.loadingFinished":
            kind, response_url = responses.get(params["requestId"], (None, None))
            if kind == "Script":
                result.scripts.append((response_url, bodies.get(params["requestId"], 0)))
    return result
