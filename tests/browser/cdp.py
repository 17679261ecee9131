"""Headless Chromium driven over its own DevTools protocol: no driver, no browser download.

Debian's `chromium` is started with the flags of shared/notes/local-stand-ins.md, a fresh profile
and ``--remote-debugging-port=0``; the port it picked is read from ``DevToolsActivePort`` in the
profile. One page, driven over one WebSocket (aiohttp's client, already a Tower dependency).
Dialogs (``confirm``) are accepted and recorded; uncaught page exceptions are recorded too, so a
test can assert there were none.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage", "--hide-scrollbars")


def find_chromium() -> str | None:
    """$TOWER_CHROMIUM when set (and nothing else), else Debian's chromium."""
    chosen = os.environ.get("TOWER_CHROMIUM")
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """A headless Chromium process with one page (`page`); close() ends it and removes its profile."""

    def __init__(self, executable: str, width: int = 1440, height: int = 900):
        self.profile = tempfile.mkdtemp(prefix="tower-chromium-")
        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port = self._port()
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5).read())
            page = next(t for t in targets if t.get("type") == "page")
            self.page = Page(page["webSocketDebuggerUrl"], width, height)
        except BaseException:
            self.close()
            raise

    def _port(self) -> int:
        marker = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited at start ({self.process.returncode})")
            time.sleep(0.05)
        raise RuntimeError("chromium did not open its DevTools port within 30 s")

    def close(self) -> None:
        page = getattr(self, "page", None)
        if page is not None:
            page.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    def __init__(self, ws_url: str, width: int, height: int):
        self.loop = asyncio.new_event_loop()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self._id = 0
        self.session = None
        self.ws = self.loop.run_until_complete(self._connect(ws_url))
        for domain in ("Page.enable", "Runtime.enable"):
            self.send(domain)
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    async def _connect(self, url: str):
        self.session = aiohttp.ClientSession()
        return await self.session.ws_connect(url, max_msg_size=0)

    def send(self, method: str, timeout: float = 30, **params):
        return self.loop.run_until_complete(asyncio.wait_for(self._send(method, params), timeout))

    async def _send(self, method: str, params: dict):
        self._id += 1
        mine = self._id
        await self.ws.send_json({"id": mine, "method": method, "params": params})
        while True:
            message = await self.ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"DevTools connection closed ({message.type})")
            data = json.loads(message.data)
            if data.get("method") == "Page.javascriptDialogOpening":
                self.dialogs.append(data["params"]["message"])
                await self.ws.send_json({"id": 0, "method": "Page.handleJavaScriptDialog", "params": {"accept": True}})
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.errors.append((details.get("exception") or {}).get("description") or details.get("text", ""))
            elif data.get("id") == mine:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def eval(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0):
        """Poll `expression` in the page until it is truthy (as JavaScript sees it: a node is)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.eval(f"Boolean({expression})"):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"page never satisfied {expression!r} in {timeout} s; page errors:"
                                     f" {self.errors}; page text:\n{self.eval('document.body.innerText')[:2000]}")
            time.sleep(0.1)

    def text(self, selector: str) -> str:
        return self.eval(f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''")

    def click(self, selector: str) -> None:
        """Clicks from a task, so a confirm() it opens does not block this call."""
        found = self.eval(f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
                          f" if (!el) return false; setTimeout(() => el.click(), 0); return true; }})()")
        assert found, f"nothing matches {selector!r}"

    def screenshot(self, path: Path, max_height: int = 2400) -> Path:
        """The page from its top, as PNG: all of it up to `max_height` pixels."""
        height = min(self.eval("Math.ceil(document.documentElement.scrollHeight)"), max_height)
        width = self.eval("document.documentElement.clientWidth")
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        async def shut():
            await self.ws.close()
            await self.session.close()

        try:
            self.loop.run_until_complete(shut())
        finally:
            self.loop.close()
