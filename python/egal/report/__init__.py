"""What people look at: the selection page of a scored pool and the experiment page of an `egal simulate` folder.

    import egal.report
    egal.report.selection_report("scores.parquet", "pool.parquet", "model.onnx", out="report")  # report/report.html
    egal.report.experiment_report("results/figshare_cpu")                                      # its report.html

  selection_page.py   the selection page: its options (SelectionReportOptions: the CLI's defaults), the rows' Grad-CAM
  selection_data.py   what it shows, from the scores alone: selection, quadrants, examples, rows in error
  experiment_page.py  the experiment page, rebuilt from an experiment folder's files
  cam_grid.py         Grad-CAM of fixed test images after every round of an experiment, as small arrays
  cards.py            one image as a card: ROI outline, Grad-CAM overlay, its numbers
  svg_plots.py        axes, binned scatter, histogram and colour bars as inline SVG (no matplotlib)
  imaging.py          colour maps, overlays, outlines, PNG data URIs (numpy and Pillow)
  pool_rows.py        a few pool rows by position, reading only their row groups
  html.py             the stylesheet, escaping, tables, the page skeleton

Nothing here imports PyTorch unless a .pt model or an experiment's recorder needs it.
"""
from .._lazy import lazy_exports

_EXPORTS = {
    "selection_report": "selection_page", "run_selection_report": "selection_page",
    "SelectionReportOptions": "selection_page", "SelectionReport": "selection_page",
    "experiment_report": "experiment_page", "ExperimentReport": "experiment_page",
    "load_cam_grid": "cam_grid",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
