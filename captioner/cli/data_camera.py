"""``captioner data camera``: camera and object motion over real photographs (video clips)."""

from __future__ import annotations

import argparse
import json

from captioner.cli.options import fraction, non_negative, positive


def add_camera(dsub) -> None:
    """Add the ``camera`` subcommand to ``captioner data``."""
    from captioner.data.camera_plan import CAMERA_MOTIONS, OBJECT_MOTIONS

    c = dsub.add_parser(
        "camera",
        help="camera and object motion over real photographs (folder per camera motion)",
        description="Write DIR/{train,val,test}/<camera>/*.mp4, DIR/<split>/objects.csv and "
        "DIR/<split>.json from a seed: a virtual camera over photographs (Debian's "
        "plasma-workspace-wallpapers, gnome-backgrounds, desktop-base and scikit-image's "
        "photos) with zero to two Tux Paint cut-outs (tuxpaint-stamps-default), parallax "
        "layers, motion blur, noise, compression and scene cuts. Camera motions: "
        f"{', '.join(CAMERA_MOTIONS)} (pan_left: the content moves right; tilt_up: it moves "
        f"down); object motions against the background: {', '.join(OBJECT_MOTIONS)}. The "
        "labels hold each frame's true transform. Without --packages or --stamps/"
        "--backgrounds the Debian packages are fetched with apt-get into "
        "$CAPTIONER_CACHE/packages (default ~/.cache/captioner/packages).",
    )
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--seed", type=int, default=0, help="the same seed gives the same files")
    c.add_argument("--n-train", type=non_negative, default=900, help="training clips")
    c.add_argument("--n-val", type=non_negative, default=180, help="validation clips")
    c.add_argument("--n-test", type=non_negative, default=180, help="test clips")
    c.add_argument("--frames", type=positive, default=16, help="frames per clip")
    c.add_argument("--size", type=positive, default=160, help="frame side, pixels (even)")
    c.add_argument("--fps", type=positive, default=12, help="frame rate of the written clips")
    c.add_argument(
        "--cuts", type=fraction, default=0.1, help="share of clips that cut to another photo"
    )
    c.add_argument(
        "--packages",
        help="folder with the Debian packages unpacked, one sub-folder per package "
        "(instead of --stamps/--backgrounds)",
    )
    c.add_argument(
        "--stamps",
        help="tuxpaint-stamps-default's stamps folder, or where the .deb was unpacked "
        "(default: fetch it with apt-get)",
    )
    c.add_argument(
        "--backgrounds",
        help="folder where the wallpaper packages were unpacked; 'none' for scikit-image's "
        "photos only (default: fetch them with apt-get when possible)",
    )
    c.add_argument(
        "--workers", type=non_negative, default=2, help="rendering processes (0 or 1: this one)"
    )
    c.set_defaults(func=_cmd_camera)


def _cmd_camera(args: argparse.Namespace) -> int:
    from captioner.data.camera import generate_camera

    paths = generate_camera(
        args.out,
        args.seed,
        args.n_train,
        args.n_val,
        args.n_test,
        frames=args.frames,
        size=args.size,
        fps=args.fps,
        cuts=args.cuts,
        stamps=args.stamps,
        backgrounds=args.backgrounds,
        packages=args.packages,
        workers=args.workers,
    )
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0
