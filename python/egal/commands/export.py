"""`egal export --model model.pt --out model.onnx`: a saved model as an ONNX Grad-CAM graph.

register(subparsers) adds the subcommand; its handler takes the parsed
arguments and returns 0, or raises EgalError for a model that cannot be
exported (the CLI prints its one line and exits 2).
"""
from __future__ import annotations

import argparse

from ..errors import EgalError
from ._flags import errors_named_as_flags, flags_for


def register(subparsers) -> argparse.ArgumentParser:
    from ..onnx.graph import IR_VERSION, OPSET  # (no torch or onnx: the graph's constants alone)

    parser = subparsers.add_parser(
        "export",
        help="export a saved model to ONNX (logits, activations, closed-form cam_weights, embedding)",
        description="Export a model saved with egal.models.save_model to an ONNX graph whose outputs are logits, "
                    "activations, the closed-form Grad-CAM weights cam_weights and the selection embedding, with a "
                    "dynamic batch axis. "
                    "Needs PyTorch, onnx and onnxscript (pip install 'egal-al[export]').",
    )
    parser.add_argument("--model", required=True, help="model file written by egal.models.save_model (.pt)")
    parser.add_argument("--out", required=True, help="where to write the ONNX graph (.onnx)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it is a graph egal exported (never "
                        "another file)")
    parser.add_argument("--opset", type=int, default=OPSET, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--ir-version", type=int, default=IR_VERSION,
                        help="ONNX IR version stamped on the file (default: %(default)s)")
    parser.set_defaults(func=run_export)
    return parser


# egal.onnx.export_onnx's arguments, each from the option of the same name.
option_of = flags_for(("model", "out", "overwrite", "opset", "ir_version"))


def run_export(args) -> int:
    try:
        from ..onnx import export as exporter
        from ..onnx import graph
    except ImportError as exc:
        raise EgalError(f"{exc}; install the exporter's dependencies with pip install 'egal-al[export]'") from None
    from ..models import ModelConfigError, ModelFileError

    with errors_named_as_flags(option_of):
        exporter.check_graph_out(args.out, overwrite=args.overwrite, model=args.model)
        try:
            path = exporter.export_onnx(args.model, args.out, overwrite=args.overwrite, opset=args.opset,
                                        ir_version=args.ir_version)
        except (exporter.ExportError, ModelFileError, ModelConfigError, FileNotFoundError) as exc:
            raise EgalError(str(exc)) from None
    print(f"wrote {path} (outputs: {', '.join(graph.OUTPUTS)}; batch axis dynamic)")
    return 0
