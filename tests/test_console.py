"""The web console (edge/console) in a real browser: Debian's chromium + chromium-driver, driven by
selenium, against a real ``cezsar run --http`` on a rendered synthetic stream.

Checked: the live image updates (two element screenshots differ); the sparklines receive points;
editing a description in the page changes the runtime's action set (seen through the control
socket) and the file on disk; an invalid edit shows its one-line error and changes nothing; an
external edit of the file appears in the page; a "try" sentence gets a score; a request without
the token is refused (loopback with a token) and a non-loopback bind without a token refuses to
start. Screenshots of the main view and the editor go to the test's tmp folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.client import ControlClient
from tests.helpers.browser import browser as _browser
from tests.helpers.browser import wait as _wait
from tests.helpers.models import deploy_dir, trained_model_dir
from tests.helpers.net import free_port
from tests.helpers.procs import actions_doc

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-console-token"
PLAN = [
    ("staying still", 4.0),
    ("spinning", 8.0),
    ("staying still", 4.0),
    ("moving left", 8.0),
    ("staying still", 4.0),
    ("spinning", 8.0),
    ("staying still", 64.0),
]


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _first_mjpeg_part(base: str, stream: str) -> bytes:
    """The live view of ``stream`` up to the end of its first JPEG (5 s at most)."""
    req = urllib.request.Request(f"{base}/console/api/video/{stream}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        part = b""
        while b"\xff\xd9" not in part:
            part += r.read1(65536)
    assert b"\xff\xd8" in part
    return part


@pytest.fixture()
def running(tmp_path: Path) -> Iterator[dict[str, Any]]:
    from cezsar.data.synthetic import render_stream

    deploy = deploy_dir()
    render_stream(tmp_path / "cam.mp4", PLAN, seed=21)
    actions = tmp_path / "actions.yaml"
    actions.write_text(actions_doc(["moving left", "spinning"]))
    port = free_port()
    ctl = f"tcp://127.0.0.1:{free_port()}"
    cmd = [
        sys.executable,
        "-m",
        "cezsar",
        "run",
        "--deploy",
        str(deploy),
        "--source",
        f"cam={tmp_path / 'cam.mp4'}",
        "--source",
        f"dead=rtsp://127.0.0.1:{free_port()}/never",  # a camera that never connects
        "--actions",
        str(actions),
        "--pub",
        f"tcp://127.0.0.1:{free_port()}",
        "--control",
        ctl,
        "--status-interval",
        "0.5",
        "--http",
        f"127.0.0.1:{port}",
        "--http-token",
        TOKEN,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CEZSAR_THREADS": "1"}
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: proc.poll() is None and _get(base + "/healthz") == 200, 60, "the runtime's HTTP server")
        yield {"base": base, "control": ctl, "actions": actions, "proc": proc, "tmp": tmp_path}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def test_console_in_a_real_browser(running: dict[str, Any]) -> None:
    base, tmp, actions = running["base"], running["tmp"], running["actions"]
    pytest.importorskip("selenium", reason="selenium is not installed (pip install 'cezsar[dev]')")
    from selenium.webdriver.common.by import By

    # the token: loopback bind with a token set -> no token, no page
    assert _get(base + "/console/") == 401
    assert _get(base + "/console/api/actions") == 401
    assert _get(base + "/console/api/actions", {"Authorization": f"Bearer {TOKEN}"}) == 200
    assert _get(base + "/console/?token=wrong") == 401

    # a camera with no picture (down, or still connecting) gets a placeholder image at once: no page load
    # waits on its live view
    assert _first_mjpeg_part(base, "dead").startswith(b"--frame\r\nContent-Type: image/jpeg")

    driver = _browser(tmp / "chromium-profile")
    try:
        driver.get(base + "/console/?token=" + TOKEN)  # sets the HttpOnly cookie for the page's requests
        loaded = time.time()
        assert "token" not in driver.current_url  # and takes the token out of the address bar
        css = driver.find_element

        # 0. each camera's health on its view and in the header: the dead one is down within 10 s
        health = lambda s: css(By.CSS_SELECTOR, f".view[data-stream='{s}'] .health").get_attribute("data-state")  # noqa: E731
        _wait(lambda: health("dead") == "down", 10, "the dead camera shown as down")
        assert time.time() - loaded < 10
        _wait(lambda: health("cam") == "live", 10, "the file shown as live")
        assert "1/2 streams live" in css(By.ID, "streams-health").text
        live_box, events_box = css(By.ID, "live").rect, css(By.ID, "events-panel").rect
        assert abs(live_box["y"] - events_box["y"]) < 5 and events_box["x"] > live_box["x"]  # side by side
        _wait(lambda: css(By.ID, "conn").text == "console: connected", 30, "the SSE connection")

        # 1. live view: the MJPEG image updates
        img = _wait(lambda: css(By.CSS_SELECTOR, "img[data-stream='cam']"), 10, "the live image")
        _wait(lambda: driver.execute_script("return arguments[0].naturalWidth", img) > 0, 20, "a first frame")
        first = img.screenshot_as_png
        second = _wait(lambda: (s := img.screenshot_as_png) != first and s, 10, "a different frame")
        assert second != first

        # 2. sparklines receive points, for every action
        for name in ("moving left", "spinning"):
            sel = f"#scores canvas[data-stream='cam'][data-action='{name}']"
            _wait(lambda sel=sel: int(css(By.CSS_SELECTOR, sel).get_attribute("data-points")) >= 3, 20, sel)
        driver.save_screenshot(str(tmp / "console-main.png"))

        # 3. edit a description in the page -> the runtime's set (control socket) and the file change
        card = css(By.CSS_SELECTOR, "#actions .action[data-name='spinning']")
        area = card.find_element(By.NAME, "descriptions")
        area.clear()
        area.send_keys("a shape spinning in place\nsomething turning around")
        card.find_element(By.CSS_SELECTOR, "button.save").click()
        with ControlClient(running["control"], timeout=5) as c:
            listed = _wait(
                lambda: (
                    (ls := c.list())
                    and next(a for a in ls["actions"] if a["name"] == "spinning")["descriptions"][0]
                    == "a shape spinning in place"
                    and ls
                ),
                5,
                "the edit in the runtime's action set",
            )
        spinning = next(a for a in listed["actions"] if a["name"] == "spinning")
        assert spinning["descriptions"] == ["a shape spinning in place", "something turning around"]
        on_disk = yaml.safe_load(actions.read_text())
        assert next(a for a in on_disk["actions"] if a["name"] == "spinning")["descriptions"] == [
            "a shape spinning in place",
            "something turning around",
        ]

        # 4. an invalid edit: its one-line error in the page, nothing changes
        before_file = actions.read_bytes()
        with ControlClient(running["control"], timeout=5) as c:
            before_set = c.list()
        card = _wait(lambda: css(By.CSS_SELECTOR, "#actions .action[data-name='spinning']"), 5, "the card")
        thr = card.find_element(By.NAME, "threshold")
        thr.clear()
        thr.send_keys("7")
        card.find_element(By.CSS_SELECTOR, "button.save").click()
        err = _wait(lambda: css(By.ID, "edit-error").text, 5, "the error line")
        assert "threshold" in err and "out of range" in err and "\n" not in err
        time.sleep(0.5)
        assert actions.read_bytes() == before_file
        with ControlClient(running["control"], timeout=5) as c:
            after_set = c.list()
        assert after_set["actions"] == before_set["actions"] and after_set["version"] == before_set["version"]

        # 5. "try a description": a sentence gets a live score on the stream
        box = css(By.ID, "try-text")
        box.send_keys("a shape moving to the left")
        css(By.CSS_SELECTOR, "#try-form button").click()
        cell = _wait(lambda: css(By.CSS_SELECTOR, "#try-result tr.tried[data-stream='cam'] .try-score"), 10, "a score")
        score = float(cell.text)
        assert -2.0 <= score <= 2.0
        css(By.CSS_SELECTOR, "#try-result button.add-as-action").click()  # the sentence becomes a draft action
        draft = css(By.CSS_SELECTOR, "#actions .action[data-key^='new:']")
        assert "a shape moving to the left" in draft.find_element(By.NAME, "descriptions").get_attribute("value")
        assert draft.find_element(By.NAME, "streams").is_displayed() and draft.find_element(By.NAME, "zone")
        draft.find_element(By.CSS_SELECTOR, "button.remove").click()
        driver.execute_script("document.getElementById('editor-panel').scrollIntoView()")
        driver.save_screenshot(str(tmp / "console-editor.png"))

        # 6. an external edit of the file shows up in the page within about a second
        actions.write_text(actions_doc(["moving left", "spinning", "growing"]))
        t0 = time.time()
        _wait(lambda: css(By.CSS_SELECTOR, "#actions .action[data-name='growing']"), 3, "the external edit")
        assert time.time() - t0 < 1.5
        _wait(lambda: css(By.CSS_SELECTOR, "#scores canvas[data-action='growing']"), 3, "its sparkline")

        # 7. the events list (the bundled demo model fires on this stream; a random-init one may not)
        if trained_model_dir() is not None:
            item = _wait(lambda: css(By.CSS_SELECTOR, "#events li"), 30, "an event in the list")
            assert " cam " in f" {item.text} "

        # 8. a phone-sized screen: one column, nothing wider than the screen
        driver.set_window_size(390, 844)
        time.sleep(0.5)
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than a phone screen"
        driver.save_screenshot(str(tmp / "console-phone.png"))
    finally:
        driver.quit()
    assert (tmp / "console-main.png").stat().st_size > 0 and (tmp / "console-editor.png").stat().st_size > 0
    if os.environ.get("CEZSAR_CONSOLE_SHOT"):  # refresh the docs' screenshot
        shutil.copy(tmp / "console-editor.png", os.environ["CEZSAR_CONSOLE_SHOT"])


def test_non_loopback_without_token_refuses_to_start(tmp_path: Path) -> None:
    from cezsar.data.synthetic import render_stream

    render_stream(tmp_path / "cam.mp4", [("staying still", 2.0)], seed=1)
    actions = tmp_path / "actions.yaml"
    actions.write_text(actions_doc(["spinning"]))
    cmd = [
        sys.executable,
        "-m",
        "cezsar",
        "run",
        "--deploy",
        str(deploy_dir()),
        "--source",
        f"cam={tmp_path / 'cam.mp4'}",
        "--actions",
        str(actions),
        "--pub",
        f"tcp://127.0.0.1:{free_port()}",
        "--control",
        "none",
        "--http",
        f"0.0.0.0:{free_port()}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "CEZSAR_HTTP_TOKEN"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if "needs a token" in ln]
    assert len(lines) == 1 and "0.0.0.0" in lines[0], r.stderr[-2000:]
