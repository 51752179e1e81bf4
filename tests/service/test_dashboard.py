"""The live dashboard in a real headless browser (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.service.server import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
KEY = "viewer-key-0123456789"

if CHROMIUM is None and os.environ.get("CI"):
    pytest.fail("CI needs chromium for the dashboard test (.ci/run installs it)", pytrace=False)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install chromium)")


def test_the_chart_follows_observations_with_their_intervals_and_anomalies(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    server = Server(tmp_path / "data", TBPTT_API_KEYS=f"ops:{KEY}").start()
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        boiler = {"model": {"input_size": 1}, "target": "next", "impute_missing": True}
        httpx.put(f"{server.url}/v1/streams/boiler", json=boiler, headers=auth)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1300, "height": 700})
            console: list[str] = []  # what the page said, for the message when an expectation fails
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"page error: {e}"))
            page.goto(server.url + "/")
            expect(page.locator("#status")).to_have_text("an API key is needed")
            page.fill("#key", KEY)
            page.dispatch_event("#key", "change")
            # a click whose press and release straddle the list's refresh (every 5 s) still chooses the stream:
            # the refresh rebuilt the buttons, and the release landed on a new one (no click event)
            page.hover("button[data-stream=boiler]")
            page.mouse.down()
            page.evaluate("loadStreams()")
            page.mouse.up()
            try:
                expect(page.locator("#live")).to_contain_text("live: waiting")
            except AssertionError as exc:  # (seen once in CI: the socket not open 5 s after the click)
                raise AssertionError(f"{exc}\nthe page: {console}\nthe server: {server.output()}") from None
            readings = [{"x": 20 + 5 * ((k % 24) / 12 - 1) ** 2} for k in range(120)]
            readings[100]["x"] = 60.0  # a reading far outside the rest: marked as anomalous
            for k in (40, 41, 42):
                readings[k]["x"] = [None]  # a dead sensor for three readings: a gap in the chart, counted
            for start in range(0, 120, 10):
                r = httpx.post(f"{server.url}/v1/streams/boiler/observations",
                               json={"observations": readings[start : start + 10]}, headers=auth)  # fmt: skip
                assert r.status_code == 200
            expect(page.locator("#live")).to_have_text("live: 120 observations")
            expect(page.locator("#stats")).to_contain_text("steps 120")
            points = int(page.locator("body").get_attribute("data-points"))
            assert points >= 100  # the loss chart drew the losses it got
            band = int(page.locator("body").get_attribute("data-band"))
            assert 90 <= band <= 100  # every prediction once calibrated (20 judged) has its interval drawn
            expect(page.locator("body")).not_to_have_attribute("data-anomalies", "0")  # the reading at 100
            expect(page.locator("#stats")).to_contain_text("anomalies")
            expect(page.locator("#stats")).to_contain_text(" episodes")
            expect(page.locator("#stats")).to_contain_text("imputed 3")
            screenshot = Path(os.environ.get("TBPTT_SCREENSHOTS", tmp_path)) / "dashboard.png"
            page.screenshot(path=str(screenshot))
            assert screenshot.stat().st_size > 10_000
            print(f"\nscreenshot: {screenshot}")
            browser.close()
    finally:
        server.stop()


def test_the_dashboard_backfills_reconnects_pages_and_shows_every_output(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    server = Server(tmp_path / "data").start()
    url = server.url
    try:
        for k in range(205):  # more than a page of the list (200)
            assert httpx.put(f"{url}/v1/streams/idle-{k:03d}", json={"model": {"input_size": 1}}).status_code == 201
        pair = {"model": {"input_size": 2}, "target": "next"}
        assert httpx.put(f"{url}/v1/streams/a-pair", json=pair).status_code == 201
        readings = {"observations": [{"x": [k % 5, 100 + 10 * (k % 7)]} for k in range(60)]}
        assert httpx.post(f"{url}/v1/streams/a-pair/observations", json=readings).status_code == 200
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1300, "height": 700})
            page.goto(url + "/")
            expect(page.locator("#status")).to_have_text("200 of 206 streams")
            page.click("#more")
            expect(page.locator("#status")).to_have_text("206 streams")
            page.click("button[data-stream=a-pair]")
            expect(page.locator("#live")).to_have_text("live: 60 observations")  # the history, before any new one
            assert int(page.locator("body").get_attribute("data-points")) >= 50  # the losses kept with the results
            low, high = map(float, page.locator("body").get_attribute("data-range").split(","))
            assert low > -10 and high < 20  # the first output: values 0-4
            page.select_option("#output", "1")
            expect(page.locator("body")).to_have_attribute("data-range", re.compile(r"^\d{2,3}\.?\d*,1\d\d"))
            server.stop()
            expect(page.locator("#live")).to_contain_text("reconnecting")
            server.start()
            more = {"observations": [{"x": [1, 120]} for _ in range(5)]}
            deadline = time.monotonic() + 30
            while "live: 60" not in page.locator("#live").inner_text() and time.monotonic() < deadline:
                time.sleep(0.1)  # reconnected: it reloaded the history
            assert httpx.post(f"{url}/v1/streams/a-pair/observations", json=more).status_code == 200
            expect(page.locator("#live")).to_have_text("live: 65 observations")
            browser.close()
    finally:
        server.stop()
