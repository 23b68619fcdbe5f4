"""A negative / neutral / positive model served by a real server: /predict answers the class
name and every class's probability, /model the classes, /metrics counts predictions per
class, /feedback takes a class by name (any case) or index and refuses others in one line,
the store keeps every class's probability, and the labeling page shows one button per class."""

from __future__ import annotations

from typing import Any

import pytest
from serve_support import Server, promote, scrape, serve_settings, start_server, wait_for

CLASSES = ["negative", "neutral", "positive"]
TOKEN = "label-writer-3c1a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def server3(trained3: dict[str, Any], running: list[Server], monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setenv("SENTOPS_FEEDBACK_TOKEN", TOKEN)
    promote(1)
    srv = start_server(serve_settings())
    running.append(srv)
    return srv


def _check_answer(body: dict[str, Any]) -> None:
    probs = body["probabilities"]
    assert list(probs) == CLASSES and sum(probs.values()) == pytest.approx(1.0)
    assert body["label"] == CLASSES[body["prediction"]]
    assert body["confidence"] == pytest.approx(max(probs.values())) == pytest.approx(probs[body["label"]])
    assert body["probability"] is None  # P(positive) is a binary model's only


def test_three_classes_served_by_name_with_every_probability(server3: Server) -> None:
    with server3.client() as c:
        info = c.get("/model").json()
        assert info["labels"] == CLASSES and info["version"] == 1
        r = c.post("/predict", json={"text": "the train arrived at the station on tuesday"})
        assert r.status_code == 200, r.text
        body = r.json()
        _check_answer(body)
        batch = c.post("/predict/batch", json={"texts": ["awful terrible worst", "loved it, brilliant", "update"]})
        assert batch.status_code == 200, batch.text
        for answer in batch.json()["predictions"]:
            _check_answer(answer)
        inv = c.post("/invocations", json={"inputs": ["awful terrible worst", "update"]})
        assert inv.status_code == 200, inv.text
        for row in inv.json()["predictions"]:  # the logged pyfunc's columns: no binary probability
            assert list(row) == ["label", "label_name", "confidence", "p_negative", "p_neutral", "p_positive"]
            assert sum(row[f"p_{n}"] for n in CLASSES) == pytest.approx(1.0)
            assert row["label_name"] == CLASSES[row["label"]]
        counted = {s[0]["label"]: s[1] for s in scrape(c)["sentops_predictions_total"]}
        assert set(CLASSES) <= set(counted) and sum(counted[n] for n in CLASSES) == 6

    server3.state.writer.flush()
    row = server3.state.store.get(body["id"])
    assert row.probability is None and row.prediction == body["prediction"]
    assert row.probabilities == pytest.approx([body["probabilities"][n] for n in CLASSES])


def test_feedback_by_name_or_index_and_one_line_for_an_unknown_class(server3: Server) -> None:
    with server3.client(headers=AUTH) as c:
        ids = [c.post("/predict", json={"text": t}).json()["id"] for t in ("fine service", "late again", "ok")]
        r = c.post("/feedback", json={"id": ids[0], "label": "Neutral"})
        assert r.status_code == 200, r.text
        assert r.json() == {"id": ids[0], "label": 1, "updated": True}
        assert c.post("/feedback", json={"id": ids[1], "label": 2}).json()["label"] == 2
        assert c.post("/feedback", json={"id": ids[2], "label": "negative"}).json()["label"] == 0
        for bad in ("mixed", 3, "pos"):
            r = c.post("/feedback", json={"id": ids[2], "label": bad})
            assert r.status_code == 422, (bad, r.text)
            detail = r.json()["detail"]
            assert "\n" not in detail and detail.startswith("label: ") and repr(bad) in detail
            assert "its classes are negative, neutral, positive" in detail
    store = server3.state.store
    assert [store.get(i).feedback_label for i in ids] == [1, 2, 0]


def test_label_page_shows_one_button_per_class(server3: Server) -> None:
    """The page's answers are the model's classes, keys 1..3 (no n/p: those are the binary
    model's); the queue says which classes."""
    from test_label_page import _chromium

    binary, driver_path = _chromium()  # skipped where there is no browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with server3.client(headers=AUTH) as c:
        assert c.get("/label/queue", params={"select": "random"}).json()["labels"] == CLASSES
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        browser.get(f"{server3.url}/label?select=random")
        browser.find_element(By.ID, "token").send_keys(TOKEN + Keys.ENTER)

        def answers() -> list[Any]:
            return list(browser.find_elements(By.CSS_SELECTOR, ".answers .class"))

        wait_for(answers, timeout=30)
        got = [(b.text, b.get_attribute("data-label"), b.get_attribute("aria-keyshortcuts")) for b in answers()]
        assert got == [("Negative 1", "0", "1"), ("Neutral 2", "1", "2"), ("Positive 3", "2", "3")]
        assert browser.find_elements(By.ID, "neg") == []  # binary's coloured buttons only
    finally:
        browser.quit()
