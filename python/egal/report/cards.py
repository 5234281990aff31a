"""One image as a reviewer sees it: the scan with the expert ROI outlined, the Grad-CAM of the predicted
class over it, and the numbers behind its place in the ranking."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .html import escape, img, number
from .imaging import cam_overlay, draw_outline, grey_to_rgb, png_data_uri


@dataclass(frozen=True)
class CardData:
    row: int  # position in the pool
    id: str
    grey: np.ndarray | None  # [H, W] float in [0, 1]; None when the image could not be decoded now
    mask: np.ndarray | None  # [H, W] 0/1; all zero without ROI
    cam: np.ndarray | None  # [h, w] normalised Grad-CAM of the predicted class
    pred: str | None
    entropy_norm: float
    misalignment: float
    score: float
    rank: float
    quadrant: str | None  # the quadrant's short name, None outside the plot
    selected: bool
    problem: str | None = None  # why the pictures are missing


def pictures(grey, mask, cam) -> tuple:
    """(image with the ROI outlined, Grad-CAM overlay with the ROI outlined) as PNG data URIs."""
    has_roi = mask is not None and bool(np.any(mask))
    plain = grey_to_rgb(grey)
    overlay = cam_overlay(grey, cam) if cam is not None else plain
    if has_roi:
        plain, overlay = draw_outline(plain, mask), draw_outline(overlay, mask)
    return png_data_uri(plain), png_data_uri(overlay)


def card(data: CardData, *, badge: bool = True) -> str:
    """badge: mark a selected row (where cards of selected and other rows mix)."""
    mark = "<span class='badge'>selected</span>" if badge and data.selected else ""
    rank = f"#{int(data.rank)}" if np.isfinite(data.rank) else "unranked"
    head = f"<h3>{escape(rank)} · {escape(data.id)}{mark}</h3>"
    flat = data.cam is not None and not np.any(np.nan_to_num(data.cam) > 0)
    if data.grey is None:
        body = f"<p class='muted'>No picture: {escape(data.problem or 'not decoded')}</p>"
    else:
        has_roi = data.mask is not None and bool(np.any(data.mask))
        plain, overlay = pictures(data.grey, data.mask, data.cam)
        roi_note = "ROI outlined" if has_roi else "no ROI"
        cam_note = f"Grad-CAM of {escape(data.pred or '?')}" + (": flat, no positive evidence" if flat else "")
        body = ("<div class='pictures'>"
                f"<figure>{img(plain, f'{data.id}: image', 'scan')}<figcaption>image, {roi_note}</figcaption></figure>"
                f"<figure>{img(overlay, f'{data.id}: Grad-CAM', 'cam')}<figcaption>{cam_note}</figcaption></figure>"
                "</div>")
    misalignment = "no ROI" if not np.isfinite(data.misalignment) else number(data.misalignment)
    facts = [("predicted", data.pred or "–"), ("entropy, normalised", number(data.entropy_norm)),
             ("misalignment", misalignment), ("score", number(data.score)),
             ("quadrant", data.quadrant or "not plotted")]
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts)
    return f"<div class='card' data-row='{data.row}'>{head}{body}<table class='facts'>{rows}</table></div>"


def cards(items, *, badge: bool = True) -> str:
    return "<div class='cards'>" + "".join(card(c, badge=badge) for c in items) + "</div>"


def colour_key(label: str) -> str:
    """The Grad-CAM colour scale and the ROI outline's colour, shown once above a set of cards."""
    from .imaging import CAM_COLORMAP, CAM_OPACITY
    from .svg_plots import colour_bar

    return (f"<div class='scale'>{colour_bar(CAM_COLORMAP, label)}"
            f"<span><span class='roi-key'></span>expert ROI outline</span>"
            f"<span class='muted'>Grad-CAM drawn at {int(CAM_OPACITY * 100)} % opacity over the image, upsampled "
            "bilinearly from the model's feature-map grid</span></div>")

