"""The selection page's plots as inline SVG: axes with ticks, labels and units, a binned density
scatter (the bins are one embedded PNG, so 100,000 rows cost what 100 do), a histogram and colour bars.
No matplotlib: the page also builds on an inference-only install."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .html import escape
from .imaging import DENSITY_COLORMAP, colorize, png_data_uri

FONT = "font-family='system-ui, sans-serif' font-size='12'"
HIGHLIGHT = "#e4007c"  # the selection, in every plot
TEXT_WIDTH = 7  # pixels a character of FONT takes at most, about (for placing labels)


def nice_ticks(low: float, high: float, count: int = 5, *, integer: bool = False) -> list:
    """About `count` round tick values covering [low, high]; integer: whole numbers only (a count axis)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    if integer:
        raw, magnitude = max(raw, 1.0), max(magnitude, 1.0)
    steps = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * magnitude for m in steps if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks, value = [], first
    while value <= high + 1e-9 * step:
        ticks.append(round(value, 10))
        value += step
    return ticks


def tick_label(value: float, step: float | None = None) -> str:
    """A tick's value with as many decimals as the ticks' spacing needs, so that neighbours never read alike."""
    if value == int(value) and (step is None or step == int(step)):
        return f"{int(value):,}"
    if step is None or step <= 0:
        return f"{value:.3g}"
    decimals = len(f"{step:.10f}".rstrip("0").split(".")[1])  # the step's own decimals: 0.25 -> 2, 0.0005 -> 4
    return f"{value:,.{decimals}f}"


def _labelled_ticks(ticks: list) -> list:
    """(value, label) of each tick, labelled by the spacing between them."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else None
    return [(value, tick_label(value, step)) for value in ticks]


@dataclass
class Axes:
    """A plot area inside an SVG of width x height, mapping data ranges to pixels."""

    width: int
    height: int
    x_range: tuple
    y_range: tuple
    left: int = 64
    right: int = 16
    top: int = 16
    bottom: int = 48

    @property
    def plot_width(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> int:
        return self.height - self.top - self.bottom

    def x(self, value) -> np.ndarray:
        low, high = self.x_range
        return self.left + (np.asarray(value, dtype=np.float64) - low) / (high - low) * self.plot_width

    def y(self, value) -> np.ndarray:
        low, high = self.y_range
        return self.top + (1 - (np.asarray(value, dtype=np.float64) - low) / (high - low)) * self.plot_height

    def frame(self, x_label: str, y_label: str, *, x_ticks=None, y_ticks=None, y_counts: bool = False) -> str:
        """Axis lines, ticks with values, and the two axis labels; y_counts: the y axis counts rows (whole ticks)."""
        parts = [f"<rect x='{self.left}' y='{self.top}' width='{self.plot_width}' height='{self.plot_height}' "
                 "fill='none' stroke='#444'/>"]
        x_ticks = x_ticks if x_ticks is not None else nice_ticks(*self.x_range)
        y_ticks = y_ticks if y_ticks is not None else nice_ticks(*self.y_range, integer=y_counts)
        for value, label in _labelled_ticks(x_ticks):
            if self.x_range[0] - 1e-12 <= value <= self.x_range[1] + 1e-12:
                px = float(self.x(value))
                bottom = self.top + self.plot_height
                parts.append(f"<line x1='{px:.1f}' y1='{bottom}' x2='{px:.1f}' y2='{bottom + 5}' stroke='#444'/>"
                             f"<text x='{px:.1f}' y='{bottom + 18}' text-anchor='middle' {FONT}>{label}</text>")
        for value, label in _labelled_ticks(y_ticks):
            if self.y_range[0] - 1e-12 <= value <= self.y_range[1] + 1e-12:
                py = float(self.y(value))
                parts.append(f"<line x1='{self.left - 5}' y1='{py:.1f}' x2='{self.left}' y2='{py:.1f}' stroke='#444'/>"
                             f"<text x='{self.left - 8}' y='{py + 4:.1f}' text-anchor='end' {FONT}>{label}</text>")
        cx, cy = self.left + self.plot_width / 2, self.top + self.plot_height / 2
        parts.append(f"<text x='{cx:.1f}' y='{self.height - 8}' text-anchor='middle' {FONT} class='axis-label'>"
                     f"{escape(x_label)}</text>")
        parts.append(f"<text x='14' y='{cy:.1f}' text-anchor='middle' {FONT} class='axis-label' "
                     f"transform='rotate(-90 14 {cy:.1f})'>{escape(y_label)}</text>")
        return "".join(parts)


def svg(width: int, height: int, body: str, label: str) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' class='plot' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' role='img' aria-label='{escape(label)}'>{body}</svg>")


def padded_range(values, minimum=-0.05, maximum=1.05, pad: float = 0.03) -> tuple:
    """[min, max] of the finite values, widened by `pad` of the span on each side, kept in [minimum, maximum]
    (a little outside [0, 1], so that values at 0 or 1 do not sit on the frame)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (minimum, maximum)
    low, high = float(finite.min()), float(finite.max())
    span = max(high - low, 0.02 * (maximum - minimum))
    return (max(minimum, low - pad * span), min(maximum, high + pad * span))


def density_scatter(x, y, *, x_label: str, y_label: str, highlight=None, thresholds=None, quadrant_names=None,
                    bins: int = 100, width: int = 640, height: int = 460) -> str:
    """Every (x, y) row binned into a bins x bins grid drawn as one image (log colour scale, DENSITY colour map,
    with its scale); `highlight` (hx, hy) rows drawn on top as rings; dashed `thresholds` (tx, ty) with
    `quadrant_names` {(x_high, y_high): name} written in the quadrants' outer corners."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    shown_x, shown_y = ([t] if thresholds is not None else [] for t in (thresholds or (None, None)))
    # The axes reach the thresholds too: a threshold outside the data would be drawn off the plot.
    x_range, y_range = padded_range(np.r_[x[keep], shown_x]), padded_range(np.r_[y[keep], shown_y])
    axes = Axes(width - 96, height, x_range, y_range)
    counts, _, _ = np.histogram2d(y[keep], x[keep], bins=bins, range=[y_range, x_range])  # [row = y, column = x]
    peak = max(1.0, float(counts.max()))
    shade = np.log1p(counts) / np.log1p(peak)
    rgb = colorize(shade[::-1], DENSITY_COLORMAP)  # image rows run top-down, y runs bottom-up
    alpha = np.where(counts[::-1] > 0, 255, 0).astype(np.uint8)[..., None]
    image = np.concatenate([rgb, alpha], axis=-1)
    body = [f"<image x='{axes.left}' y='{axes.top}' width='{axes.plot_width}' height='{axes.plot_height}' "
            f"preserveAspectRatio='none' style='image-rendering:pixelated' href='{png_data_uri(image)}'/>"]
    if thresholds is not None:
        tx, ty = thresholds
        px, py = float(axes.x(tx)), float(axes.y(ty))
        bottom, right = axes.top + axes.plot_height, axes.left + axes.plot_width
        body.append(f"<line x1='{px:.1f}' y1='{axes.top}' x2='{px:.1f}' y2='{bottom}' stroke='#d33' "
                    "stroke-dasharray='5 4'/>")
        body.append(f"<line x1='{axes.left}' y1='{py:.1f}' x2='{right}' y2='{py:.1f}' stroke='#d33' "
                    "stroke-dasharray='5 4'/>")
        for (x_high, y_high), name in (quadrant_names or {}).items():
            tx_ = right - 6 if x_high else axes.left + 6
            ty_ = axes.top + 16 if y_high else bottom - 8
            anchor = "end" if x_high else "start"
            body.append(f"<text x='{tx_}' y='{ty_}' text-anchor='{anchor}' {FONT} class='quadrant' fill='#b00' "
                        f"paint-order='stroke' stroke='white' stroke-width='3'>{escape(name)}</text>")
    if highlight is not None:
        hx, hy = (np.asarray(v, dtype=np.float64) for v in highlight)
        ok = np.isfinite(hx) & np.isfinite(hy)
        for cx, cy in zip(axes.x(hx[ok]), axes.y(hy[ok]), strict=True):
            body.append(f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='4.5' fill='none' stroke='{HIGHLIGHT}' "
                        "stroke-width='1.8'/>")
    body.append(axes.frame(x_label, y_label))
    body.append(_colour_bar(width - 80, axes.top, axes.plot_height, DENSITY_COLORMAP, log_peak=peak,
                            label="rows per bin (count, log scale)"))
    return svg(width, height, "".join(body), f"{y_label} against {x_label}")


def histogram(values, *, x_label: str, y_label: str = "rows (count)", bins: int = 40, marker=None,
              width: int = 640, height: int = 300) -> str:
    """Bars of a histogram of the finite values; marker (value, text) draws a labelled vertical line."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    x_range = padded_range(values, pad=0.0) if values.size else (0.0, 1.0)
    if x_range[1] <= x_range[0]:
        x_range = (x_range[0] - 0.01, x_range[1] + 0.01)
    counts, edges = np.histogram(values, bins=bins, range=x_range)
    top = max(1, int(counts.max()) if counts.size else 1)
    axes = Axes(width, height, x_range, (0, top * 1.08))
    body = []
    base = axes.top + axes.plot_height
    for count, low, high in zip(counts, edges[:-1], edges[1:], strict=True):
        if count:
            x0, x1, y0 = float(axes.x(low)), float(axes.x(high)), float(axes.y(count))
            body.append(f"<rect x='{x0:.1f}' y='{y0:.1f}' width='{max(0.5, x1 - x0 - 0.5):.1f}' "
                        f"height='{base - y0:.1f}' fill='#3b528b'/>")
    if marker is not None and math.isfinite(marker[0]):
        px = float(axes.x(marker[0]))
        # The label goes left of the line, or right of it where it would run over the y axis's ticks.
        left_of = px - 4 - TEXT_WIDTH * len(marker[1]) >= axes.left
        text_x, anchor = (px - 4, "end") if left_of else (px + 4, "start")
        body.append(f"<line x1='{px:.1f}' y1='{axes.top}' x2='{px:.1f}' y2='{base}' stroke='{HIGHLIGHT}' "
                    "stroke-width='2' stroke-dasharray='5 3'/>"
                    f"<text x='{text_x:.1f}' y='{axes.top + 14}' text-anchor='{anchor}' {FONT} fill='{HIGHLIGHT}' "
                    f"paint-order='stroke' stroke='white' stroke-width='3'>{escape(marker[1])}</text>")
    body.append(axes.frame(x_label, y_label, y_counts=True))
    return svg(width, height, "".join(body), f"histogram of {x_label}")


def colour_bar(name: str, label: str, *, width: int = 420, height: int = 56) -> str:
    """A horizontal 0-1 colour scale of colour map `name` with ticks and a label."""
    ramp = colorize(np.linspace(0, 1, 256)[None, :].repeat(8, axis=0), name)
    axes = Axes(width, height, (0.0, 1.0), (0.0, 1.0), left=10, right=10, top=4, bottom=34)
    body = (f"<image x='{axes.left}' y='{axes.top}' width='{axes.plot_width}' height='{axes.plot_height}' "
            f"preserveAspectRatio='none' href='{png_data_uri(ramp)}'/>")
    ticks = "".join(f"<text x='{float(axes.x(v)):.1f}' y='{axes.top + axes.plot_height + 13}' text-anchor='middle' "
                    f"{FONT}>{v:g}</text>" for v in (0, 0.25, 0.5, 0.75, 1))
    caption = f"<text x='{width / 2:.1f}' y='{height - 4}' text-anchor='middle' {FONT} class='axis-label'>" \
              f"{escape(label)}</text>"
    return svg(width, height, body + ticks + caption, label)


def _colour_bar(x: int, top: int, height: int, name: str, *, log_peak: float, label: str) -> str:
    """A vertical colour bar for a log1p-scaled count image whose brightest bin holds log_peak rows."""
    ramp = colorize(np.linspace(1, 0, 256)[:, None].repeat(8, axis=1), name)
    parts = [f"<image x='{x}' y='{top}' width='14' height='{height}' preserveAspectRatio='none' "
             f"href='{png_data_uri(ramp)}'/>", f"<rect x='{x}' y='{top}' width='14' height='{height}' fill='none' "
             "stroke='#444'/>"]
    for count in _count_ticks(log_peak):
        py = top + (1 - math.log1p(count) / math.log1p(log_peak)) * height
        parts.append(f"<text x='{x + 18}' y='{py + 4:.1f}' {FONT}>{count:,}</text>")
    cy = top + height / 2
    parts.append(f"<text x='{x + 66}' y='{cy:.1f}' text-anchor='middle' {FONT} class='axis-label' "
                 f"transform='rotate(90 {x + 66} {cy:.1f})'>{escape(label)}</text>")
    return "".join(parts)


def _count_ticks(peak: float) -> list:
    ticks = [1]
    while ticks[-1] * 10 <= peak:
        ticks.append(ticks[-1] * 10)
    if peak >= 2 and int(peak) not in ticks:
        ticks.append(int(peak))
    return ticks

