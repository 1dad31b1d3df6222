"""The web calendar as a person sees it: a real headless Chromium on a real daemon."""

from __future__ import annotations

import time

import pytest

from browser import Browser, require_chromium
from daemon import BASE_CONFIG, JOB_USER, Daemon

WEB = {**BASE_CONFIG, "web": {"listen": "127.0.0.1:0"}}


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path / "atsd", WEB).start()
    yield d
    d.stop()


@pytest.fixture
async def browser():
    require_chromium()
    b = await Browser().start()
    yield b
    await b.close()


def book(daemon: Daemon, resource: str, user: str = "alice", start: float | None = None,
         duration: float = 3600) -> str:
    with daemon.client(user) as c:
        return c.request_reservation(resource, time_needed=start,
                                     reservation_duration=duration)[0]


def bar(rid: str) -> str:
    return f"document.querySelector('.bar[data-id=\"{rid}\"]')"


async def test_a_booking_appears_without_reload(daemon, browser):
    earlier = book(daemon, "dut-1", "bob")
    await browser.goto(daemon.web)
    await browser.wait_for(f"{bar(earlier)}?.textContent === 'bob'", what="the existing booking")
    assert await browser.eval("document.querySelector('#live').textContent") == "live" or \
        await browser.wait_for("document.querySelector('#live').textContent === 'live'")
    loads = await browser.eval("performance.getEntriesByType('navigation').length")

    rid = book(daemon, "scope-1", "carol", start=time.time() + 1800)
    got = time.monotonic()
    await browser.wait_for(f"{bar(rid)}?.textContent === 'carol'", timeout=2.0,
                           what="the new booking's bar within 2 s")
    assert time.monotonic() - got < 2.0
    row = await browser.eval(f"{bar(rid)}.closest('.row').dataset.resource")
    assert row == "scope-1"
    # the same page, not a reload
    assert await browser.eval("performance.getEntriesByType('navigation').length") == loads

    with daemon.client("carol") as c:
        c.release_reservation(rid)
    await browser.wait_for(f"!{bar(rid)}", timeout=2.0, what="the released bar to go")
    assert not [m for m in browser.console if "Error" in m], browser.console


async def test_page_catches_up_after_a_daemon_restart(daemon, browser):
    await browser.goto(daemon.web)
    await browser.wait_for("document.querySelector('#live').textContent === 'live'")
    daemon.kill()
    await browser.wait_for("document.querySelector('#live').textContent !== 'live'",
                           what="the page to see the daemon gone")
    daemon.start()
    # booked before the page is back: it comes from the log, by Last-Event-ID
    rid = book(daemon, "dut-2", "dave")
    await browser.wait_for(f"{bar(rid)}?.textContent === 'dave'", timeout=15.0,
                           what="the booking made while the page was away")
    await browser.wait_for("document.querySelector('#live').textContent === 'live'")
    rid2 = book(daemon, "dut-1", "erin")
    await browser.wait_for(f"{bar(rid2)}?.textContent === 'erin'", timeout=2.0)


async def test_pages_for_pool_queues_resources_and_countdowns(tmp_path, browser):
    d = Daemon(tmp_path / "lab", {**WEB, "resources": BASE_CONFIG["resources"] + [
        {"name": "gpus/0", "type": "gpus", "slots": 4}],
        "queues": {"debug": {"backend": "local", "hosts": ["h1", "h2"]}},
        "jobs": {"run_as": JOB_USER}}).start()
    try:
        with d.client("carol") as c:
            c.checkout([{"type": "gpus", "slots": 3}])
            batch = c.create_reservation("debug", 2, 600)["reservation_id"]
        book(d, "dut-2", "bob")
        await browser.goto(d.web + "#/pool")
        await browser.wait_for("document.querySelector('.meter')?.textContent === '3 / 4 used'")
        await browser.goto(d.web + "#/queues")
        await browser.wait_for(f"document.querySelector('main').textContent.includes('{batch}')")
        assert "h1, h2" in await browser.eval("document.querySelector('main td:nth-child(6)')"
                                              ".textContent")
        await browser.goto(d.web + "#/resource/dut-2")
        await browser.wait_for("document.querySelector('main').textContent.includes('bob')")
        await browser.wait_for("document.querySelector('main').textContent"
                               ".includes('request_reservation')", what="the history")
        # a revocation counts down on the page, live
        with d.client("labadmin") as c:
            c.call("revoke", nodelist=[{"node_id": "dut-2"}], max_wait_time=600,
                   reason="firmware recall")
        await browser.wait_for("/Revoking dut-2 in (9|10):\\d\\d \\(firmware recall\\)/.test("
                               "document.querySelector('#countdowns').textContent)",
                               timeout=2.0, what="the countdown")
        await browser.goto(d.web + "#/resources")
        await browser.wait_for("document.querySelector('main').textContent"
                               ".includes('out of service (revoking')")
        # keyboard: Tab reaches a bar in the calendar, Enter says what it is
        await browser.goto(d.web + "#/calendar")
        await browser.wait_for("!!document.querySelector('.bar')")
        await browser.eval("document.querySelector('.bar').focus()")
        await browser.send("Input.dispatchKeyEvent", type="keyDown", key="Enter",
                           code="Enter", windowsVirtualKeyCode=13)
        await browser.wait_for("document.querySelector('#detail').textContent.includes(':')")
    finally:
        d.stop()
