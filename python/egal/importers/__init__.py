"""From a dataset in its published layout to an egal pool, and back to the annotators.

Importers (each streams rows to Parquet in bounded memory, writes atomically, skips and counts
what it cannot import, and returns an ImportResult):

  from_brats(dir, out, ...)        BraTS NIfTI cases -> axial slices, 16-bit PNG, tumour masks
  from_vindr_cxr(dir, out, ...)    VinDr-CXR DICOM + radiologists' boxes, merged per image
  from_siim_covid(dir, out, ...)   SIIM-FISABIO-RSNA COVID-19: study labels joined to image boxes
  from_folders(dir, out, ...)      one folder per class, name.png + name_mask.png
  from_csv(table, out, ...)        any table, columns mapped by name

The annotator round trip:

  export_selection(pool, selection, to=..., out=...)   the selected images as files, plus the
                                   labelling tool's import file with the ROI as pre-annotation
                                   (folders, Label Studio, CVAT); pseudonym_key=KEY: every
                                   id in it a random pseudonym, the key kept apart (pseudonyms)
  add_labels(pool, labels_csv, out=...)                the labels that came back, by id (or by
                                   pseudonym, with the export's pseudonym_key)

  pool_info(pool)                  rows, classes, ROI coverage, image sizes, groups, problems

Each has an options dataclass whose defaults are those of its `egal pool` command.
"""
from __future__ import annotations

from .._lazy import lazy_exports
from .errors import SourceError
from .ledger import SkipLedger
from .session import ImportResult

_LAZY = {
    "from_folders": "folders", "FoldersOptions": "folders",
    "from_csv": "csv_table", "CsvOptions": "csv_table",
    "from_brats": "brats", "BratsOptions": "brats",
    "from_vindr_cxr": "vindr_cxr", "VindrOptions": "vindr_cxr",
    "from_siim_covid": "siim_covid", "SiimOptions": "siim_covid",
    "export_selection": "selection_export", "ExportOptions": "selection_export", "ExportResult": "selection_export",
    "add_labels": "labels", "LabelOptions": "labels", "LabelResult": "labels",
    "pool_info": "info", "PoolInfo": "info",
}

__all__ = ["SourceError", "SkipLedger", "ImportResult", *_LAZY]

# Loaded on first use, so that `egal --help` and `import egal.importers` stay light.
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
