"""The page in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``)
driven by Selenium against ``condvae serve`` on loopback. It paints a mask, runs ``ipa`` and a
per-query method, cancels a long fit, asks where to look next, fills a table, downloads the
result and saves screenshots (``$CONDVAE_ARTIFACTS``, default ``artifacts/``)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
uvicorn = pytest.importorskip("uvicorn")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from condvae.app import ServeConfig, create_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="no chromium/chromedriver here (Debian: apt-get install chromium chromium-driver; .ci/run does)",
)
ARTIFACTS = Path(os.environ.get("CONDVAE_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(ServeConfig(models=("mnist-mlp-z2", "wine-tab-z4"), preload=True))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(600):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "the server did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    # without the background-networking flags Chromium tries Google's hosts at every start
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1150",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    try:
        driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    except Exception as err:  # a browser that cannot start here is a skip, not a failure
        pytest.skip(f"chromium could not start: {str(err).splitlines()[0]}")
    driver.downloads = downloads  # type: ignore[attr-defined]
    yield driver
    driver.quit()


def text(d: webdriver.Chrome, element_id: str) -> str:
    return d.find_element(By.ID, element_id).text


def completions_shown(d: webdriver.Chrome) -> int:
    return int(
        d.execute_script(
            "return [...document.querySelectorAll('#completions img')].filter(i => i.naturalWidth > 0).length"
        )
    )


def test_paint_complete_design_and_download(server: str, browser: webdriver.Chrome) -> None:
    d = browser
    d.get(server + "/")
    WebDriverWait(d, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#examples img")) == 12)
    d.find_element(By.CSS_SELECTOR, "[data-preset=top]").click()
    assert text(d, "mask-count").startswith("392 of 784")
    # paint a stroke across the hidden half: more pixels become observed
    overlay = d.find_element(By.ID, "overlay")
    ActionChains(d).move_to_element_with_offset(overlay, -100, 60).click_and_hold().move_by_offset(
        200, 0
    ).release().perform()
    painted = int(text(d, "mask-count").split()[0])
    assert painted > 392

    d.find_element(By.ID, "run").click()  # ipa, the default where a partial encoder is bundled
    WebDriverWait(d, 60).until(lambda d: completions_shown(d) == 8)
    assert text(d, "summary").startswith("ipa") and "C-ELBO" in text(d, "summary")

    Select(d.find_element(By.ID, "method")).select_by_value("gvi")
    d.find_element(By.CSS_SELECTOR, "[data-option=steps]").send_keys("300")
    d.find_element(By.ID, "n").clear()
    d.find_element(By.ID, "n").send_keys("6")
    d.find_element(By.ID, "run").click()
    WebDriverWait(d, 120).until(lambda d: text(d, "summary").startswith("gvi"))
    assert completions_shown(d) == 6 and "C-ELBO" in text(d, "summary")

    d.find_element(By.ID, "design").click()
    WebDriverWait(d, 60).until(lambda d: "best next glimpse" in text(d, "message"))
    assert d.find_element(By.ID, "heat").get_attribute("src").startswith("data:image/png")
    assert "nats" in text(d, "ranking")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(ARTIFACTS / "app.png"))

    d.find_element(By.ID, "download").click()
    for _ in range(100):
        found = list(d.downloads.glob("condvae-mnist-mlp-z2-gvi*.png"))  # type: ignore[attr-defined]
        if found and found[0].stat().st_size > 0:
            break
        time.sleep(0.1)
    assert found and found[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_progress_and_cancel(server: str, browser: webdriver.Chrome) -> None:
    d = browser
    d.get(server + "/")
    WebDriverWait(d, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#examples img")) == 12)
    Select(d.find_element(By.ID, "method")).select_by_value("gvi")
    d.find_element(By.CSS_SELECTOR, "[data-option=steps]").send_keys("1000000")
    d.find_element(By.ID, "run").click()
    WebDriverWait(d, 60).until(lambda d: "gvi" in text(d, "progress-text"))  # fed by server-sent events
    first = int(text(d, "progress-text").split()[1].split("/")[0])
    WebDriverWait(d, 30).until(lambda d: int(text(d, "progress-text").split()[1].split("/")[0]) > first)
    d.find_element(By.ID, "cancel").click()
    WebDriverWait(d, 30).until(lambda d: "cancelled" in text(d, "message"))
    assert d.find_element(By.ID, "run").is_enabled()


def test_table_model(server: str, browser: webdriver.Chrome) -> None:
    d = browser
    d.get(server + "/")
    WebDriverWait(d, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#examples img")) == 12)
    Select(d.find_element(By.ID, "model")).select_by_value("wine-tab-z4")
    WebDriverWait(d, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#features tbody tr")) == 14)
    d.find_element(By.ID, "run").click()
    WebDriverWait(d, 60).until(lambda d: text(d, "summary").startswith("ipa"))
    rows = d.find_elements(By.CSS_SELECTOR, "#features tbody tr")
    assert rows[0].find_elements(By.TAG_NAME, "td")[3].get_attribute("textContent") == "observed"
    assert "±" in rows[-1].find_elements(By.TAG_NAME, "td")[3].text
    d.find_element(By.ID, "design").click()
    WebDriverWait(d, 60).until(lambda d: "best next glimpse" in text(d, "message"))
    assert rows[-2].find_elements(By.TAG_NAME, "td")[5].text != ""  # an unobserved feature has an EIG
    d.save_screenshot(str(ARTIFACTS / "app-table.png"))
