"""The search page in real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven
by Selenium) against the API served by uvicorn: type a query, see the expected unit, open it,
and save screenshots that must not be blank.

The screenshots are kept in ``out/screenshots/`` (ignored by git) for people to look at.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from builders.search import unit
from conftest import free_port

from explainer.api.app import ApiConfig, create_app
from explainer.score.meaning import WORDS

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SHOTS = Path(__file__).resolve().parents[2] / "out" / "screenshots"
KEY = "web-test-read-key"


def _serve(settings):
    """The API and web page served by uvicorn in a thread, as `explainer serve` does (scan loaded)."""
    import uvicorn

    port = free_port()
    app = create_app(settings, ApiConfig(read_keys=(KEY,)), warm_up=True)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture
def server(searchable):
    yield from _serve(searchable)


@pytest.fixture
def tiny_server(settings, tiny_model_dir, tmp_path):
    """A server over a collection of the tiny LLaMA (a unit that can be steered); (url, unit id)."""
    from builders.intervene import collect_tiny

    unit = collect_tiny(settings, tiny_model_dir, tmp_path)[1][0]
    for url in _serve(settings):
        yield url, unit


@pytest.fixture
def browser(tmp_path):
    if not (shutil.which(CHROMIUM) and shutil.which(DRIVER)):
        pytest.fail("Debian's chromium and chromium-driver are needed: `make browser` installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _not_blank(png: Path) -> float:
    """Pixel standard deviation of the screenshot (grey levels); a blank page is ~0."""
    from PIL import Image, ImageStat

    img = Image.open(png).convert("L")
    assert img.size[0] >= 800 and img.size[1] >= 600
    std = ImageStat.Stat(img).stddev[0]
    colours = len(Image.open(png).convert("RGB").getcolors(maxcolors=1 << 20) or [])
    assert std > 20 and colours > 50, f"{png} looks blank (std {std:.1f}, {colours} colours)"
    return std


def test_search_then_open_a_unit_in_chromium(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(server + "/")
    assert browser.title.startswith("Activation explainer")
    browser.find_element(By.ID, "api-key").send_keys(KEY)
    browser.find_element(By.ID, "q").send_keys("made-up references to scholarly papers")
    browser.find_element(By.ID, "go").click()

    first = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#results li.hit")))
    expected = unit(0).unit_id
    assert first.get_attribute("data-unit") == expected
    assert unit(0).explanation in first.text and "[0.52, 0.72]" in first.text
    assert WORDS["good"] in first.text and "AUROC" in first.find_element(By.CSS_SELECTOR, ".meaning").text
    hot = [s.text for s in first.find_elements(By.CSS_SELECTOR, ".toks .tok[style]")]
    assert "et" in [h.strip() for h in hot]
    SHOTS.mkdir(parents=True, exist_ok=True)
    results_png = SHOTS / "search-results.png"
    browser.save_screenshot(str(results_png))
    _not_blank(results_png)

    first.find_element(By.CSS_SELECTOR, "a.unit-link").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "unit-title"), expected))
    view = browser.find_element(By.ID, "unit-view")
    assert unit(0).explanation in view.text and "95% CI [0.520, 0.720]" in view.text
    assert WORDS["good"] in view.text and "explainer fake-llm" in view.text
    warned = [li.get_attribute("data-code") for li in view.find_elements(By.CSS_SELECTOR, ".warnings li")]
    assert "few_activating_windows" in warned
    assert "Random windows" in view.text and "Top windows shown to the explainer" in view.text
    bars = view.find_elements(By.CSS_SELECTOR, "svg.hist rect")
    assert len(bars) == 40 and any(float(b.get_attribute("height")) > 0 for b in bars)
    unit_png = SHOTS / "unit-page.png"
    browser.save_screenshot(str(unit_png))
    _not_blank(unit_png)

    # a filter that excludes the unit, and a wrong key, show up on the page too
    browser.back()
    wait.until(ec.visibility_of_element_located((By.ID, "results-view")))
    layer = browser.find_element(By.ID, "f-layer")
    layer.clear()
    layer.send_keys("2")
    browser.find_element(By.ID, "go").click()
    shown = "return [...document.querySelectorAll('#results li.hit')].map(li => li.dataset.unit)"
    wait.until(
        lambda d: (units := d.execute_script(shown)) and expected not in units and all("/layers.2" in u for u in units)
    )
    layer.clear()
    query = browser.find_element(By.ID, "q")
    query.clear()
    query.send_keys("zqxv wobbly pterodactyl")
    browser.find_element(By.ID, "go").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "results"), "No good match"))
    key = browser.find_element(By.ID, "api-key")
    key.clear()
    key.send_keys("wrong")
    browser.find_element(By.ID, "q").send_keys(" again")
    browser.find_element(By.ID, "go").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "unknown API key"))


def test_steer_a_unit_from_its_page_in_chromium(tiny_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, unit_id = tiny_server
    wait = WebDriverWait(browser, 60)
    browser.get(url + "/")
    browser.find_element(By.ID, "api-key").send_keys(KEY)
    browser.execute_script("location.hash = arguments[0]", "#/unit/" + unit_id)
    prompt = wait.until(ec.presence_of_element_located((By.ID, "steer-prompt")))
    prompt.clear()
    prompt.send_keys("def total(xs):")
    browser.find_element(By.ID, "steer-strength").send_keys("30")
    browser.find_element(By.ID, "steer-go").click()
    steered = wait.until(ec.presence_of_element_located((By.ID, "steer-steered")))
    clean = browser.find_element(By.ID, "steer-clean")
    assert clean.text.startswith("def total(xs):") and steered.text.startswith("def total(xs):")
    out = browser.find_element(By.ID, "steer-out").text
    assert "add strength 30.000" in out and "KL " in out and "rose: " in out and "fell: " in out
    SHOTS.mkdir(parents=True, exist_ok=True)
    png = SHOTS / "steer.png"
    browser.save_screenshot(str(png))
    _not_blank(png)
    # a refusal is shown on the page, not lost
    browser.find_element(By.ID, "steer-strength").clear()
    browser.find_element(By.ID, "steer-strength").send_keys("1e9")
    browser.find_element(By.ID, "steer-go").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#steer-out .error")))


def test_the_page_script_parses():
    """A syntax error in app.js blanks the whole page: check it with Node.js (on this machine kind)."""
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    script = Path(__file__).resolve().parents[2] / "explainer" / "api" / "web" / "app.js"
    proc = subprocess.run([node, "--check", str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
