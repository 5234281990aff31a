"""Both pages opened in a real headless browser, as a reviewer would open them from disk: Chromium (Debian's
`chromium` package, or any Chrome/Chromium binary named by EGAL_CHROMIUM) driven by Playwright. Nothing may
be fetched, nothing may be logged to the console, every image must decode, every plot must draw something,
and a screenshot of each page is saved. Skipped, saying what to install, where no browser can be had
(.ci/run installs chromium where it can)."""
from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import test_report_experiment as experiment_tests
import test_report_selection as selection_tests
from egal.report import selection_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    named = os.environ.get("EGAL_CHROMIUM")
    if named:
        return named
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright is not installed: pip install playwright (egal-al[test] has it)")
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium found: apt-get install chromium (Debian/Ubuntu), or set EGAL_CHROMIUM to a "
                    "Chrome or Chromium binary (Playwright's own browser download is not needed)")
    with sync_api.sync_playwright() as playwright:
        # Chromium's sandbox cannot start as root (CI containers); the pages run no script anyway.
        args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        chromium = playwright.chromium.launch(executable_path=executable, args=args)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def selection_page(tmp_path_factory):
    paths = selection_tests.scored_pool(tmp_path_factory.mktemp("browser-selection"))
    report = selection_report(paths["scores"], paths["pool"], paths["onnx"],
                              out=os.path.join(paths["folder"], "page"), examples=selection_tests.EXAMPLES,
                              progress=False)
    return report


@pytest.fixture(scope="module")
def experiment_page(tmp_path_factory):
    return experiment_tests.tiny_simulation(tmp_path_factory.mktemp("browser-experiment"))["out"] / "report.html"


class Visit:
    """A page opened from disk, with everything the browser logged and fetched while loading it."""

    def __init__(self, browser, path):
        self.url = "file://" + os.path.abspath(path)
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.console, self.errors, self.requests = [], [], []
        self.page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.goto(self.url, wait_until="load")

    def check_loaded_cleanly(self):
        assert self.console == [] and self.errors == []
        assert self.requests == [self.url]  # the page itself, and nothing else

    def check_images_decoded(self) -> int:
        states = self.page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
        assert states and all(complete and width > 0 for complete, width in states), states
        return len(states)

    def check_plots(self, minimum: int) -> None:
        """Every figure draws a picture with content (not blank, not one flat colour); every SVG plot labels
        both axes with a unit in parentheses."""
        figures = self.page.query_selector_all("figure.plot-figure")
        assert len(figures) >= minimum
        for figure in figures:
            pixels = np.asarray(Image.open(io.BytesIO(figure.screenshot())).convert("RGB")).astype(np.float64)
            colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
            assert pixels.std() > 10 and colours >= 16, (figure.get_attribute("id"), pixels.std(), colours)
        for plot in self.page.query_selector_all("figure.plot-figure svg.plot"):
            labels = [t.text_content() for t in plot.query_selector_all(".axis-label")]
            assert len(labels) >= 2 and all("(" in t and ")" in t for t in labels), labels

    def screenshot(self, path) -> Image.Image:
        self.page.screenshot(path=str(path), full_page=True)
        shot = Image.open(path)
        assert shot.width == 1200 and shot.height > 900  # the whole page, no horizontal overflow
        assert np.asarray(shot.convert("L")).std() > 10
        return shot


def test_the_selection_page_in_a_browser(browser, selection_page, tmp_path):
    visit = Visit(browser, selection_page.path)
    visit.check_loaded_cleanly()
    in_selection = len(visit.page.query_selector_all("#selected .card"))
    cards = visit.page.query_selector_all(".card")
    assert in_selection == selection_page.selected == selection_tests.SELECT
    assert len(cards) == selection_page.selected + selection_page.examples
    images = visit.check_images_decoded()
    assert images == 2 * len(cards)  # the image and its Grad-CAM on every card
    visit.check_plots(minimum=2)  # the quadrant scatter and the score histogram
    for scale in visit.page.query_selector_all(".scale svg.plot .axis-label"):
        assert "0–1" in scale.text_content()
    visit.screenshot(tmp_path / "selection.png")
    visit.page.close()


def test_the_experiment_page_in_a_browser(browser, experiment_page, tmp_path):
    visit = Visit(browser, experiment_page)
    visit.check_loaded_cleanly()
    images = visit.check_images_decoded()
    grid = visit.page.query_selector_all("#gradcam-grid img")
    assert len(grid) == 6 * (2 + 2 * len(experiment_tests.STRATEGIES))
    assert images == len(grid) + 1  # and the learning curves
    visit.check_plots(minimum=1)
    visit.screenshot(tmp_path / "experiment.png")
    visit.page.close()


def test_long_names_wrap_inside_the_page_and_number_columns_keep_their_words(browser, tmp_path):
    # A class name or a path without spaces stretched a page to 3,350 px; letting every cell break anywhere
    # then broke the number columns' headers ("po ol", "sele cte d").
    from egal.report.html import definition_list, page, table, write_page

    name = "malignant_" * 60
    body = definition_list([("pool", "/data/" + "x" * 400 + ".parquet")]) + table(
        ("quadrant", "what it means", "pool", "selected"), [(name, "a long explanation " * 20, 95, 27)],
        numeric=(False, False, True, True))
    visit = Visit(browser, write_page(tmp_path / "page.html", page("long names", body)))
    visit.check_loaded_cleanly()
    assert visit.page.evaluate("document.documentElement.scrollWidth") <= 1200
    for header in visit.page.query_selector_all("th.num"):
        box = header.bounding_box()
        assert box["height"] < 40, (header.text_content(), box)  # one line: the word is not broken
    visit.page.close()
