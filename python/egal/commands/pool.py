"""`egal pool ...`: from a dataset's published layout to a pool, the annotator round trip, and `info`.

Each sub-command builds the options of one egal.importers function (its defaults are the options
dataclass's), calls it and prints what it returns; the work, its checks and its messages are the
library's. Errors name the command-line flag (`--min-roi-area`), not the Python argument.
"""
from __future__ import annotations

import argparse
import json

from ._flags import add_quiet, errors_named_as_flags, flag_of

POSITIONAL = {"source": "the dataset folder / table", "pool": "POOL", "labels": "LABELS"}
FORMAT = argparse.RawDescriptionHelpFormatter
# What each --images-as mode stores, for the importers that offer it (docs/importers.md).
IMAGES_AS_HELP = {
    "png": "png: each DICOM decoded by egal's rules into a 16-bit PNG inside the Parquet file, its longer side at "
    "most --max-side pixels, boxes scaled with it",
    "bytes": "bytes: images inside the Parquet file, one self-contained file (a DICOM kept as it is)",
    "paths": "paths: image files beside it, referenced by relative path (large datasets; --out must be in a "
    "folder that holds them)",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "pool", help="make pools from datasets (BraTS, VinDr-CXR, SIIM-COVID-19, folders, CSV), export a selection "
        "to annotators, add their labels, describe a pool",
        description="Pools from datasets in their published layout, and the round trip with annotators:\n"
        "  egal pool from-brats DIR --out pool.parquet --labels name_mapping.csv\n"
        "  egal score --pool pool.parquet --model model.pt --select 60\n"
        "  egal pool export-selection --pool pool.parquet --selection scores.selection.csv --to label-studio "
        "--out round1\n"
        "  egal pool add-labels pool.parquet labels.csv --out pool.round2.parquet\n"
        "Every importer streams rows to Parquet in bounded memory, writes atomically (a temporary name, renamed "
        "when complete), and prints what it skipped and why.", formatter_class=FORMAT)
    commands = parser.add_subparsers(dest="pool_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    for add in (_brats, _vindr, _siim, _folders, _csv, _export, _add_labels, _info):
        add(commands)


def _common(parser, options_class, images_as) -> None:
    from ..importers.options import default_of

    parser.add_argument("--out", required=True, help="the pool to write (a .parquet file)")
    parser.add_argument("--images-as", dest="images_as", choices=images_as,
                        default=default_of(options_class, "images_as"),
                        help="; ".join(IMAGES_AS_HELP[mode] for mode in images_as) + " (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists (once the new pool is "
                        "complete)")
    add_quiet(parser, "no progress output")


def _sub(commands, name, help_text, description, example):
    return commands.add_parser(name, help=help_text, description=description, epilog=f"Example:\n  {example}",
                               formatter_class=FORMAT)


def _brats(commands) -> None:
    from ..importers.brats import MODALITY_NAMES, ROI_LABELS, BratsOptions
    from ..importers.options import IMAGES_AS, default_of

    d = lambda name: default_of(BratsOptions, name)  # noqa: E731
    p = _sub(commands, "from-brats", "BraTS NIfTI cases -> axial slices with tumour masks",
             "Import BraTS cases (CASE_t1ce.nii.gz + CASE_seg.nii.gz per case folder; BraTS 2023's CASE-t1c.nii.gz "
             "+ CASE-seg.nii.gz too) as axial slices: intensities windowed per volume (percentiles of the brain) "
             "into 16-bit PNG, the chosen tumour sub-region as the mask, the case as the group column. Slices with "
             "at least --min-roi-area tumour pixels are kept, plus --no-tumour-share times as many tumour-free "
             "slices. Needs nibabel: pip install 'egal-al[import]'.",
             "egal pool from-brats MICCAI_BraTS2020_TrainingData --labels "
             "MICCAI_BraTS2020_TrainingData/name_mapping.csv --out brats.parquet")
    p.add_argument("source", metavar="DIR", help="folder holding the case folders")
    _common(p, BratsOptions, IMAGES_AS)
    p.add_argument("--modality", choices=sorted(MODALITY_NAMES), default=d("modality"),
                   help="which volume becomes the image (default: %(default)s)")
    p.add_argument("--labels", help="per-case classes: BraTS's name_mapping.csv (Grade: HGG/LGG) or a CSV case,label; "
                   "cases missing from it are unlabeled")
    p.add_argument("--roi", choices=sorted(ROI_LABELS), default=d("roi"),
                   help="ROI: wt whole tumour, tc tumour core, et enhancing tumour (default: %(default)s)")
    p.add_argument("--min-roi-area", type=int, default=d("min_roi_area"),
                   help="fewest ROI pixels for a tumour slice to be kept (default: %(default)s)")
    p.add_argument("--no-tumour-share", type=float, default=d("no_tumour_share"),
                   help="tumour-free slices kept per tumour slice of a case, evenly spaced (default: %(default)s)")
    p.add_argument("--no-tumour-label", help="label of tumour-free slices (default: the case's label)")
    p.add_argument("--slice-step", type=int, default=d("slice_step"),
                   help="consider every N-th axial slice (neighbours are near copies) (default: %(default)s)")
    p.add_argument("--window", type=_pair, default=d("window"), metavar="LOW,HIGH",
                   help="percentiles of the brain voxels mapped to black and white (default: 0.5,99.5)")
    p.set_defaults(func=lambda a: _import(a, "brats", "BratsOptions", "import_brats"))


def _vindr(commands) -> None:
    from ..importers.boxes import MERGE_RULES, OUT_OF_IMAGE
    from ..importers.options import default_of
    from ..importers.vindr_cxr import IMAGES_AS, TASKS, VindrOptions

    d = lambda name: default_of(VindrOptions, name)  # noqa: E731
    p = _sub(commands, "from-vindr-cxr", "VinDr-CXR DICOM radiographs with the radiologists' boxes",
             "Import VinDr-CXR from the competition layout (train.csv, train/<image_id>.dicom) or the PhysioNet "
             "archive (annotations/annotations_train.csv, train/*.dicom). The readers' boxes are merged per image "
             "(--merge), the label follows --task:\n"
             "  abnormal  'abnormal' when any finding is present, else 'normal'\n"
             "  finding   --finding NAME vs 'No finding' (images with other findings only are skipped)\n"
             "  map       --class-map CSV (class_name,label) maps findings to classes\n"
             "DICOM is decoded with egal's rules (rescale, VOI LUT, MONOCHROME1) into 16-bit PNG of at most "
             "--max-side pixels (boxes scaled with it), or kept as DICOM (--images-as bytes|paths).",
             "egal pool from-vindr-cxr vinbigdata --task finding --finding Cardiomegaly --out cxr.parquet")
    p.add_argument("source", metavar="DIR", help="the dataset folder")
    _common(p, VindrOptions, IMAGES_AS)
    p.add_argument("--split", choices=("train", "test"), default=d("split"),
                   help="which part of the dataset: the table SPLIT.csv (or annotations/annotations_SPLIT.csv) and "
                   "the images in SPLIT/ (default: %(default)s)")
    p.add_argument("--annotations", help="the annotation CSV, when it is not where the layout puts it")
    p.add_argument("--task", choices=TASKS, default=d("task"), help="the label (above) (default: %(default)s)")
    p.add_argument("--finding", help="the finding of --task finding, e.g. 'Cardiomegaly' or 'Nodule/Mass'")
    p.add_argument("--class-map", help="CSV class_name,label for --task map ('No finding' may be mapped too)")
    p.add_argument("--merge", choices=MERGE_RULES, default=d("merge"),
                   help="union: a finding is present when one reader marked it, every box kept; agree: when "
                   "--agree-readers did, boxes averaged over readers who agree by IoU (default: %(default)s)")
    p.add_argument("--agree-readers", type=int, default=d("agree_readers"),
                   help="--merge agree: how many readers must mark a finding (or say 'No finding') for it to count "
                   "(default: %(default)s)")
    p.add_argument("--agree-iou", type=float, default=d("agree_iou"),
                   help="--merge agree: the IoU, in [0, 1], at or above which boxes of different readers are one "
                   "box (default: %(default)s)")
    p.add_argument("--out-of-image", choices=OUT_OF_IMAGE, default=d("out_of_image"),
                   help="a box outside its image: skip the image, or clip the box (default: %(default)s)")
    p.add_argument("--max-side", type=int, default=d("max_side"),
                   help="--images-as png: longest side in pixels, 0 for full size (default: %(default)s)")
    p.set_defaults(func=lambda a: _import(a, "vindr_cxr", "VindrOptions", "import_vindr_cxr"))


def _siim(commands) -> None:
    from ..importers.boxes import OUT_OF_IMAGE
    from ..importers.options import default_of
    from ..importers.siim_covid import SiimOptions
    from ..importers.vindr_cxr import IMAGES_AS

    d = lambda name: default_of(SiimOptions, name)  # noqa: E731
    p = _sub(commands, "from-siim-covid", "SIIM-FISABIO-RSNA COVID-19: study labels joined to image boxes",
             "Import the SIIM-COVID-19 competition layout (train_study_level.csv, train_image_level.csv, "
             "train/<study>/<series>/<image>.dcm): each image gets its study's label (negative, typical, "
             "indeterminate, atypical) and its own opacity boxes (none: an empty ROI); the study is the group. "
             "Images are stored as for from-vindr-cxr.",
             "egal pool from-siim-covid siim-covid19-detection --out covid.parquet")
    p.add_argument("source", metavar="DIR", help="the competition folder")
    _common(p, SiimOptions, IMAGES_AS)
    p.add_argument("--out-of-image", choices=OUT_OF_IMAGE, default=d("out_of_image"),
                   help="a box outside its image: skip the image, or clip the box (default: %(default)s)")
    p.add_argument("--max-side", type=int, default=d("max_side"),
                   help="--images-as png: longest side in pixels, 0 for full size (default: %(default)s)")
    p.set_defaults(func=lambda a: _import(a, "siim_covid", "SiimOptions", "import_siim_covid"))


def _folders(commands) -> None:
    from ..importers.folders import ID_RULES, FoldersOptions
    from ..importers.options import IMAGES_AS, default_of

    d = lambda name: default_of(FoldersOptions, name)  # noqa: E731
    p = _sub(commands, "from-folders", "one folder per class, name.png + name_mask.png",
             "Import the folders layout: DIR/<class>/<name>.png with its mask <name>_mask.png beside it (or in a "
             "parallel --masks folder), unlabeled images in DIR/unlabeled/. PNG, JPEG and DICOM images; an image "
             "without mask has no ROI. Images and masks are kept byte for byte. A class folder that export-selection "
             "named by its escapes ('%43ON' for the class CON, 'a%3Ab' for a:b) is read back as that class.",
             "egal pool from-folders brain-mri --out pool.parquet")
    p.add_argument("source", metavar="DIR", help="the folder of class folders")
    _common(p, FoldersOptions, IMAGES_AS)
    p.add_argument("--masks", help="a parallel folder of masks (same relative paths)")
    p.add_argument("--mask-suffix", default=d("mask_suffix"),
                   help="what ends a mask's file name: NAME<suffix>.png beside the image NAME.png (or .jpg, .dcm) "
                   "is its mask (default: %(default)s)")
    p.add_argument("--unlabeled-folder", default=d("unlabeled_folder"),
                   help="the folder in DIR whose images have no label (default: %(default)s)")
    p.add_argument("--ids", choices=ID_RULES, default=d("ids"),
                   help="name: the file name without extension; path: with its folders (default: %(default)s)")
    p.set_defaults(func=lambda a: _import(a, "folders", "FoldersOptions", "import_folders"))


def _csv(commands) -> None:
    from ..importers.boxes import OUT_OF_IMAGE
    from ..importers.csv_table import CsvOptions
    from ..importers.options import IMAGES_AS, default_of

    d = lambda name: default_of(CsvOptions, name)  # noqa: E731
    p = _sub(commands, "from-csv", "a table of image paths, columns mapped by option",
             "Import the images a CSV lists (paths relative to the CSV's folder, or absolute). The ROI is a mask "
             "path column (--mask), a column of box lists (--boxes, [[x0,y0,x1,y1],...] or [{'x','y','width',"
             "'height'}]) or one box per row (--box-columns, rows grouped by --id); boxes in image pixels.",
             "egal pool from-csv labels.csv --id image_id --image path --box-columns x_min,y_min,x_max,y_max "
             "--label finding --out pool.parquet")
    p.add_argument("source", metavar="TABLE", help="the CSV file")
    _common(p, CsvOptions, IMAGES_AS)
    p.add_argument("--image", default=d("image"), help="column of image paths (default: %(default)s)")
    p.add_argument("--id", help="column of ids (default: the image path without extension)")
    roi = p.add_mutually_exclusive_group()
    roi.add_argument("--mask", help="column of mask PNG paths")
    roi.add_argument("--boxes", help="column of box lists")
    roi.add_argument("--box-columns", metavar="X0,Y0,X1,Y1", help="four columns of one box per row")
    p.add_argument("--label", help="column of labels (empty: unlabeled)")
    p.add_argument("--group", help="column of groups (patient ids)")
    p.add_argument("--out-of-image", choices=OUT_OF_IMAGE, default=d("out_of_image"),
                   help="a box outside its image: skip the image, or clip the box (default: %(default)s)")
    p.set_defaults(func=lambda a: _import(a, "csv_table", "CsvOptions", "import_csv"))


def _export(commands) -> None:
    from ..importers.options import default_of
    from ..importers.selection_export import TARGETS, ExportOptions

    p = _sub(commands, "export-selection", "the selected images, for a labelling tool",
             "Write the images of a selection (NAME.selection.csv from egal score --select) for annotation:\n"
             "  folders       OUT/<label>/<id>.png + <id>_mask.png (from-folders imports it back)\n"
             "  label-studio  OUT/images/, OUT/tasks.json (ROI as predictions: rectangles or brush masks) and "
             "OUT/label_config.xml; serve OUT with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and "
             "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=OUT, add OUT/images as Local Storage, import tasks.json\n"
             "  cvat          OUT/images/ and OUT/annotations.xml (CVAT for images 1.1: boxes / masks): create a "
             "task from OUT/images, then Upload annotations > CVAT 1.1\n"
             "Without --selection every row is exported.\n"
             "With --pseudonym-key KEY, every id in the export (file names, selection.csv, tasks.json, "
             "annotations.xml) is a random pseudonym instead, and the pseudonym -> id key is written to KEY (mode "
             "0600, outside --out: keep it; add-labels --pseudonym-key KEY maps the labels back). The pool's path "
             "and selection columns other than egal score's (a group column) are left out too. Not touched: the "
             "pixels (burned-in text), DICOM headers (the folders target copies DICOM files as they are), image "
             "metadata.",
             "egal pool export-selection --pool pool.parquet --selection scores.selection.csv --to label-studio "
             "--out round1\n"
             "  egal pool export-selection --pool pool.parquet --selection scores.selection.csv --to cvat --out "
             "round1 --pseudonym-key round1.key.csv")
    p.add_argument("--pool", required=True, help="the pool that was scored")
    p.add_argument("--selection", help="CSV with an id column (default: every row)")
    p.add_argument("--to", choices=TARGETS, default=default_of(ExportOptions, "to"),
                   help="the layout written, for the tool that labels it (above) (default: %(default)s)")
    p.add_argument("--out", required=True, help="the folder to write (new, or empty)")
    p.add_argument("--roi-label", default=default_of(ExportOptions, "roi_label"),
                   help="name of the ROI in the tool (default: %(default)s)")
    p.add_argument("--url-prefix", default=default_of(ExportOptions, "url_prefix"),
                   help="label-studio: prefix of the image URLs (default: %(default)s, Local Storage)")
    p.add_argument("--label-column", default=default_of(ExportOptions, "label_column"), metavar="COLUMN",
                   help="the pool's column of the labels (default: %(default)s)")
    p.add_argument("--unlabeled-folder", default=default_of(ExportOptions, "unlabeled_folder"),
                   help="folders: the folder of the rows without a label, as from-folders reads it back "
                   "(default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it holds an earlier export and nothing added or changed since")
    p.add_argument("--pseudonym-key", metavar="KEY",
                   help="replace every id in the export by a random pseudonym and write the pseudonym -> id key to "
                   "KEY, a new file outside --out (with --overwrite: the key of the export --out replaces); keep it, "
                   "add-labels needs it")
    add_quiet(p, "no progress output")
    p.set_defaults(func=_run_export)


def _add_labels(commands) -> None:
    from ..importers.labels import LabelOptions
    from ..importers.options import default_of

    p = _sub(commands, "add-labels", "the annotators' labels, by id, into a new pool",
             "Write the pool with the labels of a CSV (columns id,label; Label Studio's CSV export: --id-column "
             "egal_id) or of CVAT's export of a task made from export-selection --to cvat (annotations.xml, "
             "'CVAT for images 1.1': each image's tag is its label). Refused, naming the first offenders: ids not "
             "in the pool, an id given two labels, a labelled row given another label (unless --relabel), classes "
             "the pool has never seen (unless --allow-new-classes). Empty label cells are ignored. Prints what "
             "changed (nothing with --quiet; errors go to stderr either way). The labels of an export made with "
             "--pseudonym-key name pseudonyms: pass the same --pseudonym-key KEY to map them back to the ids.",
             "egal pool add-labels pool.parquet round1-labels.csv --out pool.round2.parquet\n"
             "  egal pool add-labels pool.parquet annotations.xml --pseudonym-key round1.key.csv --out "
             "pool.round2.parquet")
    p.add_argument("pool", metavar="POOL", help="the pool")
    p.add_argument("labels", metavar="LABELS", help="the CSV of labels, or CVAT's annotations .xml")
    p.add_argument("--out", required=True, help="the new pool (a .parquet file)")
    p.add_argument("--id-column", default=default_of(LabelOptions, "id_column"),
                   help="the CSV's id column (default: %(default)s)")
    p.add_argument("--label-column", default=default_of(LabelOptions, "label_column"),
                   help="the CSV's label column (default: %(default)s)")
    p.add_argument("--pool-label-column", default=default_of(LabelOptions, "pool_label_column"), metavar="COLUMN",
                   help="the pool's column of the labels, which the new labels go into (default: %(default)s)")
    p.add_argument("--relabel", action="store_true", help="allow changing labels the pool already has")
    p.add_argument("--allow-new-classes", action="store_true", help="allow classes the pool has never seen")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--pseudonym-key", metavar="KEY",
                   help="the key export-selection --pseudonym-key wrote: the labels' ids are its pseudonyms")
    add_quiet(p, "print nothing but errors (no summary of what changed)")
    p.set_defaults(func=_run_add_labels)


def _info(commands) -> None:
    from ..pool.labels import LABEL_COLUMN
    from ..pool.schema import GROUP_COLUMN

    p = _sub(commands, "info", "rows, classes, ROI coverage, image sizes, groups, problems",
             "Describe a pool: rows, classes and counts, labelled share, ROI coverage (mask / boxes / none), image "
             "formats, sizes and bit depths, groups, and rows with problems (unreadable image headers, masks not of "
             "their image's shape, boxes outside their image), from the headers alone; with --decode, from every "
             "image and ROI decoded as egal score decodes them, so that the rows it would give status 'error' are "
             "known before a long run.",
             "egal pool info pool.parquet --json\n  egal pool info pool.parquet --decode --workers 4")
    p.add_argument("pool", metavar="POOL", help="the pool (a Parquet file or a folder of them)")
    p.add_argument("--group-column", default=GROUP_COLUMN, help="the group / patient column (default: %(default)s)")
    p.add_argument("--label-column", default=LABEL_COLUMN, metavar="COLUMN",
                   help="the column of the labels (default: %(default)s)")
    p.add_argument("--decode", action="store_true",
                   help="also decode every image and ROI (slower: about as long as egal score's decoding)")
    p.add_argument("--workers", type=int, default=0,
                   help="with --decode: decoder processes (default: %(default)s, decode in this process)")
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    p.set_defaults(func=_run_info)


def _pair(text: str):
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers LOW,HIGH, got {text!r}") from None
    return (low, high)


def _flag(argument: str):
    return None if argument in POSITIONAL else flag_of(argument)


def _options(options_class, args, **values):
    """options_class(...) from the parsed arguments; a bad value names its flag."""
    from dataclasses import fields

    given = {f.name: getattr(args, f.name) for f in fields(options_class) if hasattr(args, f.name)}
    given.update(values)
    with errors_named_as_flags(_flag):
        return options_class(**given)


def _named(function, *args, **kwargs):
    """function(*args, **kwargs), its errors naming the flags (errors_named_as_flags)."""
    with errors_named_as_flags(_flag):
        return function(*args, **kwargs)


def _import(args, module: str, options_name: str, function: str) -> int:
    from importlib import import_module

    library = import_module(f"..importers.{module}", __package__)
    options = _options(getattr(library, options_name), args, progress=not args.quiet)
    print(_named(getattr(library, function), options).summary())
    return 0


def _run_export(args) -> int:
    from ..importers.selection_export import ExportOptions, run_export

    options = _options(ExportOptions, args, progress=not args.quiet)
    print(_named(run_export, options).summary())
    return 0


def _run_add_labels(args) -> int:
    from ..importers.labels import LabelOptions, run_add_labels

    result = _named(run_add_labels, _options(LabelOptions, args))
    if not args.quiet:
        print(result.summary())
    return 0


def _run_info(args) -> int:
    from ..importers.info import pool_info

    info = _named(pool_info, args.pool, group_column=args.group_column, label_column=args.label_column,
                  decode=args.decode, workers=args.workers, progress=not args.json)
    print(json.dumps(info.to_dict(), indent=2) if args.json else info.summary())
    return 0
