"""The search page of `mbret serve`, driven in headless Chromium (Debian's `chromium` and
`chromium-driver`, installed here when missing) against a live service: pick an index, type a query,
see hits with titles, snippets and scores; a filter narrows them; a bad filter shows its error."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from .serving import Server, copy_index

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


_INSTALL: subprocess.Popen[bytes] | None = None  # the background install, once started
_INSTALL_LOG = Path(tempfile.gettempdir()) / f"mbret-chromium-install-{os.getpid()}.log"


def start_chromium_install() -> None:
    """Start installing Debian's Chromium and its driver in the background when missing (`apt-get update`, then
    `apt-get install chromium chromium-driver`, as root, from Debian's registry); conftest starts it when this
    check is selected, so the download overlaps the tests before it."""
    global _INSTALL
    apt = shutil.which("apt-get")
    if _INSTALL is not None or apt is None or (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        return
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    script = f"{apt} update -qq && {apt} install -y -qq chromium chromium-driver"
    with open(_INSTALL_LOG, "wb") as log:
        _INSTALL = subprocess.Popen(["sh", "-c", script], stdout=log, stderr=subprocess.STDOUT, env=env)


def _ensure_chromium() -> None:
    """Debian's Chromium and its driver, installed here or waited for (when the install runs in the background)."""
    start_chromium_install()
    if _INSTALL is not None:
        code = _INSTALL.wait(timeout=1200)
        assert code == 0, f"apt-get install chromium chromium-driver failed: {_INSTALL_LOG.read_text()[-1000:]}"
    assert Path(CHROMIUM).exists() and Path(DRIVER).exists(), (
        "the browser check needs Debian's chromium and chromium-driver (apt-get not found)"
    )


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    _ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.mark.slow
def test_the_search_page_renders_hits_in_chromium(browser, served_indexes: dict[str, Path], tmp_path: Path) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    paths = [
        copy_index(served_indexes["flat"], tmp_path / "flat"),
        copy_index(served_indexes["plaid"], tmp_path / "plaid"),
    ]
    server = Server(paths, log=tmp_path / "server.log")
    try:
        wait = WebDriverWait(browser, 30)
        browser.get(server.url + "/")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#index option")) == 2)
        Select(browser.find_element(By.ID, "index")).select_by_value("plaid")
        browser.find_element(By.ID, "query").send_keys("vitamin levels")
        browser.find_element(By.ID, "k").clear()
        browser.find_element(By.ID, "k").send_keys("5")
        browser.find_element(By.ID, "go").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".hit")) == 5)
        hits = browser.find_elements(By.CSS_SELECTOR, ".hit")
        titles = [h.find_element(By.TAG_NAME, "h3").text for h in hits]
        scores = [float(h.find_element(By.CLASS_NAME, "score").text) for h in hits]
        assert all(t.startswith("Study ") for t in titles) and scores == sorted(scores, reverse=True)
        assert "a study of" in hits[0].text and "5 hits" in browser.find_element(By.ID, "status").text
        expected = server.client.search("plaid", ["vitamin levels"], k=5, return_documents=True)[0]
        assert titles == [h.title for h in expected]  # what the page shows is what the API returns
        screenshot = tmp_path / "page.png"
        browser.save_screenshot(str(screenshot))
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000

        browser.find_element(By.ID, "where").send_keys("venue = ?")
        browser.find_element(By.ID, "params").send_keys('"SIGIR"')
        browser.find_element(By.ID, "go").click()
        wait.until(lambda d: all("SIGIR" in h.text for h in d.find_elements(By.CSS_SELECTOR, ".hit")))
        browser.find_element(By.ID, "params").clear()
        browser.find_element(By.ID, "go").click()  # a ? without its value: the service's error, shown
        wait.until(ready.text_to_be_present_in_element((By.ID, "status"), "where:"))
        assert not browser.find_elements(By.CSS_SELECTOR, ".hit")
    finally:
        server.stop(signal.SIGTERM)
