"""``captioner calibrate``: store a caption bundle's training-feature statistics, so that its
answers say when an image is out of its domain."""

from __future__ import annotations

import argparse
import shlex
import sys

from captioner.cli.options import DEVICE_HELP, non_negative, positive


def add_calibrate(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="add out-of-domain statistics to a caption bundle",
        description="Encode images like the ones the bundle was trained on, store their pooled "
        "features (half precision, with their mean and spread) and the distance threshold "
        "(the --percentile of their own distances) in "
        "BUNDLE/domain.safetensors, and list it in the manifest. Captions from the bundle then "
        "carry domain_distance and out_of_domain. The model's weights are not changed.",
    )
    p.add_argument("bundle", metavar="BUNDLE", help="caption bundle folder to calibrate")
    p.add_argument(
        "--images", required=True, nargs="+", help="training images: files, folders or globs"
    )
    p.add_argument("--limit", type=positive, help="use only the first N images (sorted)")
    p.add_argument(
        "--percentile",
        type=float,
        default=99.0,
        help="training images' distance percentile that becomes the threshold",
    )
    p.add_argument(
        "--neighbours", type=positive, default=5, help="nearest calibration images averaged"
    )
    p.add_argument("--batch-size", type=positive, default=32, help="images per encoder pass")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--workers", type=non_negative, default=2, help="decoding processes")
    p.set_defaults(func=_cmd_calibrate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    import json

    from captioner.calibrate import calibrate

    command = "captioner " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "captioner calibrate"
    stats = calibrate(
        args.bundle,
        args.images,
        limit=args.limit,
        percentile=args.percentile,
        neighbours=args.neighbours,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        progress=not args.quiet,
        note={"command": command},
    )
    print(json.dumps({"bundle": args.bundle, "threshold": round(stats.threshold, 4)}))
    return 0
