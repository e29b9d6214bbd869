"""report.html: one self-contained page, opened from a file:// URL in headless Chromium (Debian's chromium and
chromium-driver, installed by .ci/run), every picture rendered, nothing fetched from the network."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

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
        assert "color" in cells
        metrics = json.loads((report.parent / "metrics.json").read_text())
        for key in ("image_auroc", "pixel_auroc", "aupro", "iou", "f1_max"):  # the values of metrics.json
            i = cells.index(key)
            assert cells[i + 1] == f"{metrics[key]:.4f}", key
        shot = report.parent / "report-screenshot.png"  # the test's artefact, beside the report
        driver.set_window_size(1300, 2400)
        assert driver.save_screenshot(str(shot))
        assert np.asarray(Image.open(shot).convert("L"), dtype=np.float32).std() > 10
        urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(not u.startswith("http") for u in urls), urls  # opened offline, nothing requested
    finally:
        driver.quit()
