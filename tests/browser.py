"""A real headless Chromium for tests, driven over the DevTools protocol with aiohttp's
websocket client (no browser-automation package needed).

``chromium`` is Debian's package (.ci/run installs it). Without it the browser tests skip,
unless ATSD_REQUIRE_BROWSER=1 (CI), where a missing browser is a failure.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("ATSD_REQUIRE_BROWSER"):
            pytest.fail("ATSD_REQUIRE_BROWSER is set but chromium is not installed")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


class Browser:
    """One Chromium process with one page (tab)."""

    def __init__(self, width: int = 1400, height: int = 900) -> None:
        self.size = (width, height)
        self.proc: subprocess.Popen | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self.console: list[str] = []     # console messages and uncaught exceptions

    async def start(self) -> Browser:
        """Launch Chromium and attach to its page. A launch that dies or stalls (seen once
        under a loaded CI machine, with nothing of ours involved yet) is tried once more;
        a second failure fails with what Chromium printed."""
        try:
            port = await self._launch()
        except AssertionError:
            port = await self._launch()
        self.http = aiohttp.ClientSession()
        async with self.http.get(f"http://127.0.0.1:{port}/json/list") as r:
            page = next(t for t in await r.json() if t["type"] == "page")
        self.ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self.send("Runtime.enable")
        await self.send("Page.enable")
        return self

    async def _launch(self) -> int:
        self.profile = Path(tempfile.mkdtemp(prefix="atsd-chromium-"))
        log = self.profile.with_suffix(".log")
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [require_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-extensions",
                 "--disable-dev-shm-usage", f"--window-size={self.size[0]},{self.size[1]}",
                 f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
                 "about:blank"],
                stdout=subprocess.DEVNULL, stderr=err)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        try:
            while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close_process()
                    raise AssertionError(
                        f"chromium did not open its DevTools port (exit {self.proc.returncode}):"
                        f" {log.read_text(errors='replace')[-1500:]}")
                await asyncio.sleep(0.05)
            return int(port_file.read_text().split()[0])
        finally:
            log.unlink(missing_ok=True)

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            fut = self._waiting.pop(data.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(a.get("value", a.get("description")))
                                             for a in data["params"]["args"]))
            elif data.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(data["params"]["exceptionDetails"])[:2000])

    async def send(self, method: str, **params) -> dict:
        i = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[i] = fut
        await self.ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, 60)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply["result"]

    async def eval(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression,
                                 returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'",
                            what=f"{url} to load")

    async def wait_for(self, expression: str, timeout: float = 10.0, what: str = "") -> object:
        """Poll ``expression`` in the page until it is truthy, or fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for "
                                     f"{what or expression}; console: {self.console[-5:]}")
            await asyncio.sleep(0.02)

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        path.write_bytes(base64.b64decode(shot["data"]))

    async def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            await self.ws.close()
            self._reader.cancel()
        if getattr(self, "http", None) is not None:
            await self.http.close()
        self.close_process()

    def close_process(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)
