"""``geminifusion export``: an ONNX file of a model, checked in ONNX Runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

from geminifusion.commands import options as opt

EPILOG = """\
examples:
  geminifusion export runs/nyudv2_mit_b3 mit_b3.onnx --size 480x640
  geminifusion export paper_swin.pth.tar swin.onnx --arch swin_large_window12 --size 480x480
  geminifusion export mit_b0 mit_b0.onnx --num-classes 40 --dynamic-batch   (random weights)
"""


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="write an ONNX file of a model and check it in ONNX Runtime",
        description="Export a model to ONNX for one input size: one float32 B x 3 x H x W input "
        "per modality (named rgb, depth, ...) and one logit map per output (rgb_logits, ..., "
        "ensemble_logits). The fusion layers' folded weights and Swin's window layouts become "
        "constants for that size; --dynamic-batch leaves only the batch free. The file is then "
        "validated with onnx.checker and run in ONNX Runtime on random inputs; a difference to "
        "PyTorch above 1e-4 is an error. Needs the export extra: pip install "
        '"geminifusion[export]".',
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    opt.add_source(p)
    p.add_argument("out", type=Path, metavar="OUT.onnx", help="the ONNX file to write")
    opt.add_input_shape(p)
    p.add_argument(
        "--dynamic-batch",
        action="store_true",
        help="leave the batch dimension free (MiT and DeLiVER models)",
    )
    p.add_argument("--opset", type=opt.positive_int, help="ONNX opset (default: the exporter's)")
    p.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="check the file in ONNX Runtime against PyTorch (default: on)",
    )
    opt.add_overwrite(p, "OUT file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geminifusion.export import ExportError, export_onnx, require_export
    from geminifusion.files import claim_file

    require_export(check=args.check)
    claim_file(
        args.out, "export", replace=args.overwrite, replace_flag="--overwrite", inputs=[args.source]
    )
    model = opt.load_source(args)
    try:
        result = export_onnx(
            model,
            args.out,
            size=args.size,
            batch=args.batch,
            dynamic_batch=args.dynamic_batch,
            opset=args.opset,
            check=args.check,
            command="export",
        )
    except ExportError as err:
        raise opt.CLIError(str(err)) from None
    print(result.describe())
    return 0
