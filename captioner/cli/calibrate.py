"""``captioner calibrate``: store a caption bundle's reference features, so that its answers
say when an image is out of its domain."""

from __future__ import annotations

import argparse
import shlex
import sys

from captioner.cli.options import DEVICE_HELP, non_negative, positive


def add_calibrate(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="add out-of-domain statistics to a caption bundle",
        description="Encode pictures with the bundle's encoder and store their pooled features "
        "(half precision) in BUNDLE/domain.safetensors, listed in the manifest. In-domain "
        "references: --images and the everyday photos of --photos DIR's tune split. "
        "Out-of-domain references (optional): --outside, the tune split's non-photos and "
        "--foreign generated pictures. With one set an image is out of domain past the "
        "--percentile of the references' own distances; with both, when it is --margin closer "
        "to the out-of-domain ones, or farther than --far from every in-domain one. --add keeps "
        "the stored features and adds the new ones. Captions from the bundle then carry "
        "domain_distance and out_of_domain. The model's weights are not changed.",
    )
    p.add_argument("bundle", metavar="BUNDLE", help="caption bundle folder to calibrate")
    p.add_argument(
        "--images", nargs="+", default=[], help="in-domain images: files, folders or globs"
    )
    p.add_argument(
        "--outside", nargs="+", default=[], help="out-of-domain images: files, folders or globs"
    )
    p.add_argument(
        "--photos",
        metavar="DIR",
        help="a real-photo set (captioner data photos --out DIR): its tune split only",
    )
    p.add_argument(
        "--crops", type=non_negative, default=0, help="random crops added per --photos picture"
    )
    p.add_argument(
        "--foreign",
        type=non_negative,
        default=0,
        metavar="N",
        help="N generated pictures of each of text, screenshot, night sky, microscopy",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and generated pictures")
    p.add_argument(
        "--add",
        action="store_true",
        help="keep the bundle's stored features and add these; the threshold is recomputed",
    )
    p.add_argument("--limit", type=positive, help="use only the first N --images (sorted)")
    p.add_argument(
        "--percentile",
        type=float,
        default=99.0,
        help="one reference set: the references' distance percentile that becomes the threshold",
    )
    p.add_argument(
        "--margin",
        type=float,
        help="two reference sets: out when this much closer to the out-of-domain ones (0)",
    )
    p.add_argument(
        "--far",
        type=float,
        help="two reference sets: out when farther than this from every in-domain one (0.8)",
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
        outside=args.outside,
        photos=args.photos,
        crops=args.crops,
        foreign=args.foreign,
        seed=args.seed,
        margin=args.margin,
        far=args.far,
        add=args.add,
    )
    out = {"bundle": args.bundle, "threshold": round(stats.threshold, 4)}
    if stats.outside is not None:
        out.update(far=stats.far, images=stats.features.size(0), outside=stats.outside.size(0))
    print(json.dumps(out))
    return 0
