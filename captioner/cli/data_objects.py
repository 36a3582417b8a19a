"""``captioner data objects``: the object bank (photo cut-outs on photographs)."""

from __future__ import annotations

import argparse
import json

from captioner.cli.options import fraction, non_negative, positive


def add_objects(dsub) -> None:
    """Add the ``objects`` subcommand to ``captioner data``."""
    from captioner.data.objects import DEFAULT_HOLD_OUT

    o = dsub.add_parser(
        "objects",
        help="photo cut-outs on photographs (COCO captions format)",
        description="Write DIR/{train,val,test,novel}.json and DIR/images/ from a seed: real "
        "photographic cut-outs (Debian's tuxpaint-stamps-default) pasted on photographs, "
        "textures and gradients, with captions that count only what is there. Without "
        "--stamps/--backgrounds the Debian packages are fetched with apt-get into "
        "$CAPTIONER_CACHE/packages (default ~/.cache/captioner/packages).",
    )
    o.add_argument("--out", required=True, help="output folder")
    o.add_argument("--seed", type=int, default=0, help="the same seed gives the same files")
    o.add_argument("--n-train", type=non_negative, default=8000, help="training images")
    o.add_argument("--n-val", type=non_negative, default=500, help="validation images")
    o.add_argument("--n-test", type=non_negative, default=1000, help="test images")
    o.add_argument(
        "--n-novel", type=non_negative, default=500, help="test images of held-out categories"
    )
    o.add_argument("--image-size", type=positive, default=224, help="image side, pixels")
    o.add_argument(
        "--stamps",
        help="tuxpaint-stamps-default's stamps folder, or where the .deb was unpacked "
        "(default: fetch it with apt-get)",
    )
    o.add_argument(
        "--backgrounds",
        help="folder where the background packages were unpacked; 'none' for textures and "
        "gradients only (default: fetch them with apt-get when possible)",
    )
    o.add_argument(
        "--hold-out",
        default=",".join(DEFAULT_HOLD_OUT),
        help="comma-separated categories kept out of train/val/test and put in the novel "
        "split ('' for none)",
    )
    o.add_argument(
        "--mix-scenes",
        type=fraction,
        default=0.3,
        help="fraction of train/val/test images drawn from the synthetic scenes generator",
    )
    o.add_argument(
        "--slots",
        action="store_true",
        help="train/val captions say <obj> / <objs> where the object nouns go, for a model "
        "that names objects from the image (test and novel keep the nouns)",
    )
    o.set_defaults(func=_cmd_objects)


def _cmd_objects(args: argparse.Namespace) -> int:
    from captioner.data.objects import generate_objects

    paths = generate_objects(
        args.out,
        args.seed,
        args.n_train,
        args.n_val,
        args.n_test,
        args.n_novel,
        args.image_size,
        stamps=args.stamps,
        backgrounds=args.backgrounds,
        hold_out=[c for c in args.hold_out.split(",") if c.strip()],
        mix_scenes=args.mix_scenes,
        slots=args.slots,
    )
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0
