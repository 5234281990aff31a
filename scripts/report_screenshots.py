"""The README's screenshots of the report pages (docs/report/*.png), taken in headless Chromium with Playwright.

    egal demo --out egal-demo
    egal report --scores egal-demo/scores.parquet --pool egal-demo/pool.parquet --model egal-demo/model.pt \
                --out egal-demo/report
    egal report --experiment results/figshare_pretrained_cpu
    python scripts/report_screenshots.py --selection egal-demo/report/report.html \
                --experiment results/figshare_pretrained_cpu/report.html --out docs/report

Either page alone can be given. Writes selection.png (summary and the first cards), selection_quadrants.png
(the pool's quadrant plot, its table
and the confident-but-looking-elsewhere examples) and experiment_figshare.png (the whole experiment page). A PNG
over 300 KB is reduced to 256 colours, then to 60 % or 50 % of its size while that is not enough. The browser
is EGAL_CHROMIUM, else the first chromium / google-chrome on PATH.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import sys

from PIL import Image

WIDTH = 1100
LIMIT = 300_000  # bytes per screenshot in the repository


def save(png: bytes, path: str) -> None:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.save(path, optimize=True)
    full = image
    for scale in (1.0, 0.6, 0.5):  # smaller only when needed: a long page (the experiment's) stays over the limit
        if os.path.getsize(path) <= LIMIT:
            break
        image = full.resize((round(full.width * scale), round(full.height * scale)), Image.Resampling.LANCZOS)
        palette = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        palette.save(path, optimize=True)
    print(f"{path}: {image.width} x {image.height}, {os.path.getsize(path) / 1000:.0f} KB")


def bottom_of(elements) -> float:
    box = elements[-1].bounding_box()
    return box["y"] + box["height"] + 12


def selection_shots(page, out: str) -> None:
    save(page.screenshot(full_page=True, clip={"x": 0, "y": 0, "width": WIDTH,
                                               "height": bottom_of(page.query_selector_all("#selected .card")[:3])}),
         os.path.join(out, "selection.png"))
    # The quadrant plot and table, then straight to the confident-but-looking-elsewhere examples.
    page.evaluate("""() => {
        let node = document.querySelector('h3#examples-uncertain_misaligned');
        while (node && node.id !== 'examples-confident_misaligned') { node.style.display = 'none';
                                                                      node = node.nextElementSibling; }
    }""")
    top = page.query_selector("h2#quadrants").bounding_box()["y"] - 8
    cards = page.query_selector_all("h3#examples-confident_misaligned + .cards .card")
    bottom = bottom_of(cards) if cards else bottom_of(page.query_selector_all("h3#examples-confident_misaligned"))
    save(page.screenshot(full_page=True, clip={"x": 0, "y": top, "width": WIDTH, "height": bottom - top}),
         os.path.join(out, "selection_quadrants.png"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--selection", help="a selection page (egal report --out DIR: DIR/report.html)")
    parser.add_argument("--experiment", help="an experiment page (OUT/report.html of egal simulate)")
    parser.add_argument("--out", default="docs/report", help="folder for the PNGs (default: %(default)s)")
    args = parser.parse_args(argv)
    if not (args.selection or args.experiment):
        parser.error("give --selection, --experiment or both: the pages to photograph")
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("EGAL_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if executable is None:
        print("no Chromium: apt-get install chromium, or set EGAL_CHROMIUM", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    with sync_playwright() as playwright:
        sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = playwright.chromium.launch(executable_path=executable, args=sandbox)
        page = browser.new_page(viewport={"width": WIDTH, "height": 900})
        if args.selection:
            page.goto("file://" + os.path.abspath(args.selection))
            selection_shots(page, args.out)
        if args.experiment:
            page.goto("file://" + os.path.abspath(args.experiment))
            save(page.screenshot(full_page=True), os.path.join(args.out, "experiment_figshare.png"))
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
