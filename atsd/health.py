"""Health checks: each configured resource's ``health_check`` command, run every
``interval_s`` as an asyncio subprocess (never blocking the loop; at most ``MAX_RUNNING`` at
once, so a lab of hundreds of boards does not fork hundreds of probes together).

A run that exits 0 within ``timeout_s`` passed; anything else (a non-zero exit, a timeout,
a command that cannot start) failed. ``failures`` consecutive failures take the resource
down; one pass brings it up again (only if a health check took it down: an admin's
``down`` stays). The change goes through the engine (``Service.set_state``), which publishes
``resource.state`` and tells the reservations booked there; the server is woken to commit
and publish it like any other change.
"""

from __future__ import annotations

import asyncio
import time

from . import log as logmod
from .engine.service import HEALTH

MAX_RUNNING = 4

log = logmod.get("atsd.health")


class HealthChecks:
    def __init__(self, server, config) -> None:
        self.server = server
        self.checks = config.health_checks
        self.cwd = config.base
        self._running = asyncio.Semaphore(MAX_RUNNING)
        self._tasks: list[asyncio.Task] = []

    @property
    def started(self) -> bool:
        return bool(self._tasks)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch(name, check))
                       for name, check in self.checks.items()]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _watch(self, name: str, check) -> None:
        failed = 0
        while True:
            why = await self._run(check)
            failed = 0 if why is None else failed + 1
            if why is None:
                self._report(name, True, "health check passed")
            elif failed >= check.failures:
                self._report(name, False, f"health check failed {failed} times: {why}")
            await asyncio.sleep(check.interval_s)

    async def _run(self, check) -> str | None:
        """None when the check passed, else why it failed."""
        async with self._running:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *check.command, cwd=self.cwd, stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            except OSError as exc:
                return f"cannot run {check.command[0]}: {exc.strerror or exc}"
            try:
                code = await asyncio.wait_for(proc.wait(), check.timeout_s)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
                return f"no answer within {check.timeout_s:g}s"
            except asyncio.CancelledError:
                proc.kill()
                await proc.wait()
                raise
            return None if code == 0 else f"exit status {code}"

    def _report(self, name: str, up: bool, reason: str) -> None:
        app = self.server.app
        if up and not app.lab.resources[name].in_service:
            return                  # revoked: restore is the admin's to do
        if app.service.set_state(name, up, reason, HEALTH, time.time()):
            log.info("health_changed", resource=name, up=up, reason=reason)
            self.server.wake()
