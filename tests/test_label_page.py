"""The labeling page (/label): a real server on 127.0.0.1 with the tiny model, its data
endpoints behind the label-writer token, and a person's session in a real headless
Chromium (Debian's chromium + chromedriver, driven by Selenium; nothing downloaded).

``SENTOPS_WRITE_SCREENSHOT=1`` also writes docs/img/label_page.png from the browser."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from local_services import unavailable
from serve_support import Server, assert_imports_without_torch, promote, serve_settings, start_server, wait_for

from sentiment_ops.data import load_corpus

TOKEN = "label-writer-5e1b"
ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "img" / "label_page.png"
# read at import: the autouse isolated_home fixture clears SENTOPS_* before each test
WRITE_SCREENSHOT = os.environ.get("SENTOPS_WRITE_SCREENSHOT") == "1"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture()
def server(home_with_model: dict[str, Any], running: list[Server], monkeypatch: pytest.MonkeyPatch) -> Server:
    """A real server with the label-writer token, after 12 tweets were served through /predict."""
    monkeypatch.setenv("SENTOPS_FEEDBACK_TOKEN", TOKEN)
    promote(1)
    srv = start_server(serve_settings())
    running.append(srv)
    with srv.client() as c:
        for text in load_corpus("tweets").test.texts[:12]:
            assert c.post("/predict", json={"text": text}).status_code == 200
    return srv


def test_label_api_needs_the_token_and_undo_clears(server: Server) -> None:
    with server.client() as c:
        page = c.get("/label")  # the page holds no data: public
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy and "script-src 'sha256-" in policy and "form-action 'none'" in policy
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert page.headers["Referrer-Policy"] == "no-referrer" and page.headers["X-Frame-Options"] == "DENY"
        assert 'name="viewport"' in page.text and 'aria-live="polite"' in page.text
        for headers in (None, _bearer("wrong")):
            assert c.get("/label/queue", headers=headers).status_code == 401
            assert c.post("/label/undo", json={"id": "x"}, headers=headers).status_code == 401

        queue = c.get("/label/queue?select=uncertain&n=5", headers=_bearer(TOKEN))
        assert queue.status_code == 200, queue.text
        body = queue.json()
        assert body["strategy"] == "uncertain" and body["pool"] == 12 and len(body["items"]) == 5
        first = body["items"][0]
        assert {"id", "text", "label", "confidence", "prediction"} <= set(first)
        assert c.get("/label/queue?select=loudest", headers=_bearer(TOKEN)).status_code == 422

        pid = first["id"]
        for label, updated in ((1, True), (1, False), (0, True)):  # nothing twice; a label can be corrected
            r = c.post("/feedback", json={"id": pid, "label": label}, headers=_bearer(TOKEN))
            assert r.json()["updated"] is updated
        assert server.state.store.get(pid).feedback_label == 0
        after = c.get("/label/queue?select=uncertain&n=20", headers=_bearer(TOKEN)).json()
        assert after["pool"] == 11 and pid not in {i["id"] for i in after["items"]}

        undo = c.post("/label/undo", json={"id": pid}, headers=_bearer(TOKEN))
        assert undo.status_code == 200 and undo.json() == {"id": pid, "cleared": True}
        assert server.state.store.get(pid).feedback_label is None
        assert c.post("/label/undo", json={"id": pid}, headers=_bearer(TOKEN)).json()["cleared"] is False
        assert c.post("/label/undo", json={"id": "nope"}, headers=_bearer(TOKEN)).status_code == 404
        assert c.get("/label/queue?select=uncertain&n=20", headers=_bearer(TOKEN)).json()["pool"] == 12


def test_texts_not_kept_the_queue_says_so_and_no_log_line_holds_a_text(
    home_with_model: dict[str, Any], running: list[Server], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """store.store_text false: /label/queue answers that texts are not kept (the page shows
    the detail), and no log line of the server holds a served text."""
    monkeypatch.setenv("SENTOPS_FEEDBACK_TOKEN", TOKEN)
    monkeypatch.setenv("SENTOPS_STORE__STORE_TEXT", "false")
    promote(1)
    texts = [f"private review {i}: the crew at gate B{i} was rude" for i in range(6)]
    with caplog.at_level(logging.DEBUG):
        srv = start_server(serve_settings())
        running.append(srv)
        with srv.client() as c:
            for text in texts[:3]:
                assert c.post("/predict", json={"text": text}).status_code == 200
            assert c.post("/predict/batch", json={"texts": texts[3:]}).status_code == 200
            queue = c.get("/label/queue?select=uncertain&n=5", headers=_bearer(TOKEN))
        srv.stop()
    assert queue.status_code == 422, queue.text
    assert "texts are not kept (store.store_text is false)" in queue.json()["detail"]
    assert not any(t in queue.text for t in texts)
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert caplog.records and not any(t in logged for t in texts)


def test_the_serving_app_imports_without_torch() -> None:
    """The serve image has no torch: the app, the labeling page and its queue import without it."""
    assert_imports_without_torch(
        "import sentiment_ops.serving.app, sentiment_ops.serving.label_page, sentiment_ops.labeling.queue"
    )


# -- the browser ------------------------------------------------------------------------------
def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        unavailable("chromium and chromedriver not installed: run `bash scripts/ci_services.sh`")
    try:
        import selenium  # noqa: F401
    except ImportError:
        unavailable("selenium not installed: pip install -e '.[dev]'")
    assert browser is not None and driver is not None
    return browser, driver


@pytest.fixture()
def browser() -> Iterator[Any]:
    binary, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,760"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console: CSP violations show there
    # the system driver: Selenium Manager never runs, so nothing is downloaded
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_label_three_by_keyboard_then_undo_one(server: Server, browser: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def progress() -> dict[str, str]:
        p = browser.find_element(By.ID, "progress")
        return {"labelled": p.get_attribute("data-labelled") or "", "text": p.text}

    def current() -> str:
        return str(browser.find_element(By.ID, "card").get_attribute("data-id") or "")

    browser.get(f"{server.url}/label?select=mixed&n=8")
    assert browser.find_element(By.ID, "work").is_displayed() is False
    browser.find_element(By.ID, "token").send_keys(TOKEN + Keys.ENTER)  # the form asks for the token
    wait_for(current, timeout=30)
    assert browser.execute_script("return sessionStorage.getItem('sentops.labelToken')") == TOKEN
    assert progress()["text"].startswith("0 labelled · 8 left")

    answered: list[tuple[str, int | None]] = []
    for key, label in (("1", 0), ("p", 1), ("2", 1)):  # negative, positive, positive
        pid = current()
        ActionChains(browser).send_keys(key).perform()
        wait_for(lambda pid=pid: current() != pid, timeout=20)
        answered.append((pid, label))
    assert wait_for(lambda: progress()["labelled"] == "3")
    ActionChains(browser).send_keys("u").perform()  # undo the last one
    wait_for(lambda: progress()["labelled"] == "2" and current() == answered[2][0], timeout=20)
    assert "2 labelled · 6 left" in progress()["text"]
    if WRITE_SCREENSHOT:  # the page mid-session, for docs/retraining.md
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))

    # the page ran under its Content-Security-Policy, and nothing of it was refused
    assert "Content-Security-Policy" in httpx.get(f"{server.url}/label").headers
    console = [entry["message"] for entry in browser.get_log("browser")]
    assert not [m for m in console if "Content Security Policy" in m or "Refused" in m], console

    store = server.state.store
    labeled = {r.id: r.feedback_label for r in store.rows(labeled=True)}
    assert labeled == {answered[0][0]: 0, answered[1][0]: 1}  # exactly the two that remain
    assert store.get(answered[2][0]).feedback_label is None
    agree = sum(store.get(pid).prediction == label for pid, label in answered[:2])
    assert f"agreement with the model {round(100 * agree / 2)}% ({agree} of 2)" in progress()["text"]
