"""The question page at ``GET /``: served by Flask, and used in a real headless Chromium against a running
``semqa serve`` (Debian's chromium and chromium-driver, driven by Selenium; ``make test`` installs them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from semqa.launch import RunningServer, running_server
from server.app import create_app
from tests.conftest import copy_index

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Without the networking flags Chromium keeps trying to reach Google's hosts, which this network refuses.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
KEY = "web-test-key"
# Characters outside the Basic Multilingual Plane are one code point in the API's offsets and two UTF-16
# units in JavaScript: a page slicing by UTF-16 units would mark the wrong characters after them.
ASTRAL_DOCUMENT = {
    "id": "notes/astral.txt",
    "title": "Launch log",
    "text": "🚀🚀🚀 Launch log 🛰️. The Tianzhou cargo craft carried six tonnes of propellant to the station. "
    "The crew unpacked it over three days.",
}


def test_page_is_served_with_the_limits_and_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert 'max="50"' in html and 'maxlength="1000"' in html  # the settings' limits, in the form
    assert 'id="api-key"' not in html  # no key field when questions need no key
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    # a range past the end: its code is one the README lists (it was the catch-all "error")
    beyond = client.get("/static/app.js", headers={"Range": "bytes=999999-"})
    assert beyond.status_code == 416 and beyond.get_json()["error"]["code"] == "range_not_satisfiable"
    assert "/" not in client.get("/openapi.json").get_json()["paths"]  # the page is not part of the API


def test_page_asks_for_a_key_when_reads_need_one(corpus_settings, searcher):
    settings = corpus_settings.model_copy(update={"read_requires_key": True, "api_keys": KEY})
    html = create_app(settings, searcher=searcher).test_client().get("/").get_data(as_text=True)
    assert 'id="api-key"' in html


@pytest.fixture(scope="module")
def server(tmp_path_factory, corpus_build, corpus_settings) -> Iterator[RunningServer]:
    """``semqa serve`` on a copy of the corpus index, with one document written through the API."""
    index_dir = tmp_path_factory.mktemp("web") / "index"
    copy_index(corpus_settings.index_dir, index_dir)
    env = {"SEMQA_CACHE_DIR": str(corpus_settings.cache_dir), "SEMQA_API_KEYS": KEY}
    with running_server(["--index-dir", str(index_dir)], env=env) as running:
        written = requests.post(
            running.url + "/documents",
            json={"documents": [ASTRAL_DOCUMENT]},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=60,
        )
        assert written.status_code == 200, written.text
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[object]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(
            "the browser test needs Debian's chromium and chromium-driver: run `make test`, which installs "
            "them, or `apt-get install chromium chromium-driver`"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with both paths given, Selenium never looks for a download
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_window_size(1200, 1000)
    yield driver
    driver.quit()


def _wait_for_outcome(browser) -> None:
    """Until the page shows passages, says none matched, or shows an error."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script(
            "return !document.getElementById('error').hidden"
            " || /passages? in|No passage/.test(document.getElementById('status').textContent)"
        )
    )


def _ask(browser, server: RunningServer, question: str) -> None:
    """Open the page and ask with the keyboard only: type, then Enter."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server.url + "/")
    box = browser.find_element(By.ID, "question")
    assert browser.switch_to.active_element == box  # the cursor starts in the question box
    box.send_keys(question, Keys.ENTER)
    _wait_for_outcome(browser)


def _api(server: RunningServer, question: str, **body: object) -> dict:
    response = requests.post(server.url + "/ask", json={"question": question, **body}, timeout=60)
    assert response.status_code == 200
    return response.json()


def test_question_shows_the_answer_passages_and_highlights(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    question = "In which city is the 2020 China Space Conference held?"
    _ask(browser, server, question)
    browser.save_screenshot(str(tmp_path / "answer.png"))
    expected = _api(server, question)
    assert "Fuzhou" in browser.find_element(By.ID, "answer").text
    items = browser.find_elements(By.CSS_SELECTOR, "#passages > li")
    assert len(items) == len(expected["passages"]) == 5
    for item, passage in zip(items, expected["passages"], strict=True):
        assert item.find_element(By.TAG_NAME, "h3").text == passage["title"]
        assert passage["document_id"] in item.find_element(By.CSS_SELECTOR, ".doc").text
        assert f"score {passage['score']:.3f}" in item.find_element(By.CSS_SELECTOR, ".score").text
        assert item.find_element(By.TAG_NAME, "mark").text == passage["highlight"]["text"]
    assert "q=In+which+city" in browser.current_url  # the question can be linked and reloaded
    assert (tmp_path / "answer.png").stat().st_size > 10_000


def test_mode_and_passage_count_can_be_changed(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    browser.get(server.url + "/")
    question = browser.find_element(By.ID, "question")
    question.send_keys("space station modules")
    Select(browser.find_element(By.ID, "mode")).select_by_value("lexical")
    top_k = browser.find_element(By.ID, "top-k")
    top_k.clear()
    top_k.send_keys("2")
    question.send_keys(Keys.TAB)  # the Ask button is next in the keyboard order
    assert browser.switch_to.active_element.get_attribute("id") == "ask"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    _wait_for_outcome(browser)
    assert browser.switch_to.active_element.get_attribute("id") == "ask"  # the keyboard keeps its place
    assert browser.find_element(By.ID, "status").text.startswith("2 passages")
    assert "(lexical)" in browser.find_element(By.ID, "status").text
    scores = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#passages .score")]
    assert len(scores) == 2 and not any("dense" in s for s in scores)  # lexical mode embeds nothing
    expected = _api(server, "space station modules", mode="lexical", top_k=2)
    shown = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#passages .doc")]
    assert [p["document_id"] for p in expected["passages"]] == [s.split(" · ")[0] for s in shown]


def test_errors_are_shown_in_words(server, browser):
    from selenium.webdriver.common.by import By

    _ask(browser, server, "   ")  # passes the browser's `required`, refused by the API
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed()
    assert error.text.startswith("The question was not accepted:") and "white space" in error.text
    assert not browser.find_element(By.ID, "passages-box").is_displayed()


def test_highlight_stays_in_place_after_astral_characters(server, browser):
    from selenium.webdriver.common.by import By

    question = "How much propellant did the Tianzhou cargo craft carry to the station?"
    _ask(browser, server, question)
    expected = _api(server, question)["passages"][0]
    assert expected["document_id"] == ASTRAL_DOCUMENT["id"]
    first = browser.find_element(By.CSS_SELECTOR, "#passages > li")
    assert first.find_element(By.TAG_NAME, "mark").text == expected["highlight"]["text"]
    assert "Tianzhou" in expected["highlight"]["text"]


def test_page_fits_a_phone_screen(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    # A phone's viewport, emulated by Chromium itself (a headless window cannot be narrower than 500 px).
    phone = {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", phone)
    try:
        _ask(browser, server, "When will China complete its space station?")
        browser.save_screenshot(str(tmp_path / "phone.png"))
        assert browser.execute_script("return window.innerWidth") == 375
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0  # nothing wider than the screen: no sideways scrolling
        box = browser.find_element(By.ID, "question").rect
        button = browser.find_element(By.ID, "ask").rect
        assert button["y"] > box["y"] and button["width"] > 300  # the button goes under the box, full width
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_back_and_forward_show_each_question_again(server, browser):
    from selenium.webdriver.common.by import By

    _ask(browser, server, "In which city is the 2020 China Space Conference held?")
    box = browser.find_element(By.ID, "question")
    box.clear()
    box.send_keys("How much propellant did the Tianzhou cargo craft carry to the station?\n")
    _wait_for_outcome(browser)
    assert "Tianzhou" in browser.find_element(By.ID, "answer").text
    browser.back()
    _wait_for_outcome(browser)
    assert "Fuzhou" in browser.find_element(By.ID, "answer").text
    assert browser.find_element(By.ID, "question").get_attribute("value").startswith("In which city")
    browser.back()  # the empty page: nothing from the last answer is left
    assert browser.find_element(By.ID, "question").get_attribute("value") == ""
    assert browser.find_element(By.ID, "status").text == ""
    assert not browser.find_element(By.ID, "passages-box").is_displayed()


@pytest.fixture(scope="module")
def keyed_server(corpus_build, corpus_settings) -> Iterator[RunningServer]:
    """``semqa serve`` where questions need a key."""
    env = {
        "SEMQA_CACHE_DIR": str(corpus_settings.cache_dir),
        "SEMQA_API_KEYS": KEY,
        "SEMQA_READ_REQUIRES_KEY": "true",
    }
    with running_server(["--index-dir", str(corpus_settings.index_dir)], env=env) as running:
        yield running


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("", "This server needs an API key for questions: send Authorization: Bearer"),
        ("wrong-key", "This server needs an API key for questions: the API key is not valid"),
        ("clé", "The API key can only hold printable ASCII characters"),  # refused before sending
    ],
)
def test_a_missing_or_wrong_key_is_shown_in_words(keyed_server, browser, key, shown):
    from selenium.webdriver.common.by import By

    browser.get(keyed_server.url + "/")
    browser.find_element(By.ID, "api-key").send_keys(key)
    browser.find_element(By.ID, "question").send_keys("Where is the conference held?\n")
    _wait_for_outcome(browser)
    assert browser.find_element(By.ID, "error").text.startswith(shown)


def test_the_key_typed_in_the_page_is_sent(keyed_server, browser):
    from selenium.webdriver.common.by import By

    browser.get(keyed_server.url + "/")
    browser.find_element(By.ID, "api-key").send_keys(KEY)
    browser.find_element(By.ID, "question").send_keys(
        "In which city is the 2020 China Space Conference held?\n"
    )
    _wait_for_outcome(browser)
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert "Fuzhou" in browser.find_element(By.ID, "answer").text
