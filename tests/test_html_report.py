"""report.html: one self-contained page, opened from a file:// URL in headless Chromium (Debian's chromium and
chromium-driver, installed by .ci/run), every picture rendered, nothing fetched from the network."""

import shutil

import pytest

from utad.cli import main

CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(trained_run), "--out", str(out), "--quiet"]) == 0
    return out / "report.html"


def test_report_is_self_contained(report):
    text = report.read_text()
    assert (
        "<h2>Metrics</h2>" in text and "<h2>Per defect type</h2>" in text and "Worst false positives" in text
    )
    assert "http://" not in text and "https://" not in text  # nothing to fetch: pictures are data URIs
    assert text.count("src='data:image/png;base64,") >= 8
    for kind in ("color", "hole", "scratch", "foreign"):
        assert f"<td>{kind}</td>" in text


@pytest.mark.skipif(not (CHROMEDRIVER and CHROMIUM), reason="needs Debian's chromium and chromium-driver")
def test_report_renders_in_headless_chromium(report):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.get(report.resolve().as_uri())
        assert driver.title == "utad report"
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) >= 8
        for img in images:  # every picture decoded and laid out
            w, h = driver.execute_script(
                "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img
            )
            assert w > 100 and h > 100, img.get_attribute("alt")
        cells = [td.text for td in driver.find_elements(By.TAG_NAME, "td")]
        assert "image_auroc" in cells and "color" in cells
        urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(not u.startswith("http") for u in urls), urls  # opened offline, nothing requested
    finally:
        driver.quit()
