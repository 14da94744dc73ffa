"""The console's history panels in a real browser (Debian's chromium + chromium-driver via selenium)
against a real ``cezsar run --http --history`` whose history holds an earlier run's events: review
(stored events after a restart, thumbnails, filter, details with the scores around), search (a
sentence -> result thumbnails that open the moment) and the backtest in the action editor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.browser import browser as _browser
from tests.helpers.browser import wait as _wait
from tests.helpers.models import deploy_dir
from tests.helpers.net import free_port
from tests.helpers.procs import ROOT, actions_doc
from tests.test_console import TOKEN, _get

pytestmark = pytest.mark.slow


@pytest.fixture()
def running(tmp_path: Path, long_video: Path) -> Iterator[dict[str, Any]]:
    from cezsar.data.synthetic import render_stream
    from edge.runtime import Runtime
    from edge.settings import settings_from

    render_stream(
        tmp_path / "cam.mp4",
        [
            ("staying still", 4.0),
            ("spinning", 8.0),
            ("staying still", 4.0),
            ("moving left", 8.0),
            ("staying still", 6.0),
        ],
        seed=21,
    )
    actions = tmp_path / "actions.yaml"
    actions.write_text(actions_doc(["moving left", "spinning"]))
    history = tmp_path / "history.sqlite"
    first = settings_from(  # an earlier run: its events and windows are in the file
        deploy=str(deploy_dir()),
        source=[f"cam={tmp_path / 'cam.mp4'}"],
        actions=str(actions),
        realtime=False,
        pub=f"tcp://127.0.0.1:{free_port()}",
        control="none",
        history=str(history),
        history_thumbnails="2s",
    )
    assert Runtime(first).run() == 0
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "cezsar",
        "run",
        "--deploy",
        str(deploy_dir()),
        "--source",
        f"live={long_video}",
        "--actions",
        str(actions),
        "--pub",
        f"tcp://127.0.0.1:{free_port()}",
        "--control",
        "none",
        "--http",
        f"127.0.0.1:{port}",
        "--http-token",
        TOKEN,
        "--history",
        str(history),
    ]
    log = (tmp_path / "run.log").open("w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CEZSAR_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: proc.poll() is None and _get(base + "/healthz") == 200, 60, "the runtime's HTTP server")
        yield {"base": base, "tmp": tmp_path}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def test_review_search_and_backtest_in_a_real_browser(running: dict[str, Any]) -> None:
    pytest.importorskip("selenium", reason="selenium is not installed (pip install 'cezsar[dev]')")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, tmp = running["base"], running["tmp"]
    assert _get(base + "/api/history/events") == 401  # behind the token like the rest
    driver = _browser(tmp / "chromium-profile")
    try:
        driver.get(base + "/console/?token=" + TOKEN)
        css, all_css = driver.find_element, driver.find_elements

        # review: the earlier run's events, with their thumbnails, survive the restart
        _wait(lambda: len(all_css(By.CSS_SELECTOR, "#review-list li.h-event")) == 2, 30, "the stored events")
        assert "2 event(s)" in css(By.ID, "review-page").text
        img = css(By.CSS_SELECTOR, "#review-list li.h-event img.h-thumb")
        _wait(lambda: driver.execute_script("return arguments[0].naturalWidth", img) > 0, 10, "a thumbnail")
        Select(css(By.ID, "review-action")).select_by_value("spinning")
        css(By.CSS_SELECTOR, "#review-filters button").click()
        _wait(lambda: len(all_css(By.CSS_SELECTOR, "#review-list li.h-event")) == 1, 10, "the filter")
        item = css(By.CSS_SELECTOR, "#review-list li.h-event")
        assert "spinning" in item.text
        item.click()
        canvas = _wait(lambda: css(By.CSS_SELECTOR, "#review-detail canvas.h-spark"), 10, "the event's details")
        assert int(canvas.get_attribute("data-points")) > 10
        driver.execute_script("document.getElementById('review-panel').scrollIntoView()")
        driver.save_screenshot(str(tmp / "history-review.png"))

        # search: a sentence -> result thumbnails; the first opens its moment (the "moving left" event)
        css(By.ID, "search-text").send_keys("something moves to the left")
        Select(css(By.ID, "search-since")).select_by_value("")
        css(By.CSS_SELECTOR, "#search-form button").click()
        first = _wait(lambda: css(By.CSS_SELECTOR, "#search-results .h-moment[data-rank='1']"), 30, "a result")
        assert first.get_attribute("data-stream") == "cam"
        first.click()
        moment = _wait(lambda: css(By.ID, "moment").is_displayed() and css(By.ID, "moment"), 5, "the moment")
        assert "event: moving left" in moment.text
        driver.execute_script("document.getElementById('search-panel').scrollIntoView()")
        driver.save_screenshot(str(tmp / "history-search.png"))

        # backtest in the editor, before Save: the stored windows with an edited threshold
        card = _wait(lambda: css(By.CSS_SELECTOR, "#actions .action[data-name='moving left']"), 10, "the card")
        run = _wait(lambda: card.find_element(By.CSS_SELECTOR, "button.bt-run"), 10, "the backtest button")
        run.click()
        summary = _wait(lambda: card.find_element(By.CSS_SELECTOR, ".bt-summary").text, 30, "a backtest")
        assert summary.startswith("over the last 24 hours: ") and " 0 events" not in summary, summary
        assert card.find_elements(By.CSS_SELECTOR, ".bt-events li")
        thr = card.find_element(By.NAME, "threshold")
        thr.clear()
        thr.send_keys("1.5")
        run.click()
        _wait(lambda: "0 events" in card.find_element(By.CSS_SELECTOR, ".bt-summary").text, 30, "the stricter backtest")
        driver.execute_script("document.getElementById('editor-panel').scrollIntoView()")
        driver.save_screenshot(str(tmp / "history-backtest.png"))
    finally:
        driver.quit()
