"""Screenshot of the `mbret serve` search page for the docs: serve an index, search it in headless
Chromium (Debian's chromium and chromium-driver), save the page.

    python scripts/page_screenshot.py runs/scifact-mini "vitamin D and bone density" docs/img/serve-search-page.png
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.serving import Server  # noqa: E402


def main() -> None:
    index, query, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    server = Server([index], log=Path("/tmp/mbret-page-server.log"))
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(server.url + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#index option"))
        driver.find_element(By.ID, "query").send_keys(query)
        driver.find_element(By.ID, "k").clear()
        driver.find_element(By.ID, "k").send_keys("5")
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".hit")) == 5)
        time.sleep(0.3)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
        print(f"saved {out}")
    finally:
        driver.quit()
        server.stop()


if __name__ == "__main__":
    main()
