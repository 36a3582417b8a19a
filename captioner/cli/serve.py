"""``captioner serve`` and ``captioner export``."""

from __future__ import annotations

import argparse
import json
import sys

from captioner.cli.options import positive


def add_serve(sub) -> None:
    # Every argument goes to the service's own command, --help included: no options here.
    p = sub.add_parser(
        "serve",
        help="run the HTTP service (see `captioner serve --help`)",
        add_help=False,
        prefix_chars="\0",
        verbosity=False,
    )
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    """Hand over to ``python -m service`` in this same process (same PID, so signals and the
    graceful SIGTERM still reach the server); the library never imports the service."""
    import importlib.util
    import os

    if importlib.util.find_spec("service") is None:
        raise ValueError(
            "the HTTP service is not installed next to captioner (no 'service' package); "
            "install the project with: pip install -e ."
        )
    os.execv(sys.executable, [sys.executable, "-m", "service", *args.args])
    return 1  # not reached: execv replaces this process


def add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a caption bundle to TorchScript or ONNX",
        description="Write DIR/encoder, DIR/decoder_init and DIR/decoder_step (.pt or .onnx, "
        "dynamic batch) and DIR/export.json (names, shapes, vocabulary, preprocessing). "
        "ONNX needs the 'export' extra: pip install 'captioner[export]'.",
    )
    p.add_argument("bundle", help="caption bundle folder")
    p.add_argument(
        "--format", dest="fmt", choices=("torchscript", "onnx"), required=True, help="graph format"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--opset", type=positive, default=18, help="ONNX opset (default 18)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from captioner.export import export_bundle

    meta = export_bundle(args.bundle, args.out, args.fmt, opset=args.opset)
    graphs = json.loads(meta.read_text())["graphs"]
    print(json.dumps({"export": str(meta), "files": [g["file"] for g in graphs.values()]}))
    return 0
