"""``captioner data photos``: real photographs with hand labels, for ``evaluate --photos``."""

from __future__ import annotations

import argparse
import json


def add_photos(dsub) -> None:
    """Add the ``photos`` subcommand to ``captioner data``."""
    p = dsub.add_parser(
        "photos",
        help="labelled real photographs for captioner evaluate caption --photos",
        description="Write DIR/images/<id>.png and DIR/photos.json from the committed hand "
        "labels (captioner/data/real_photos.json): scikit-image's photographs and the Debian "
        "wallpaper packages gnome-backgrounds, plasma-workspace-wallpapers and desktop-base, "
        "fetched with apt-get into $CAPTIONER_CACHE/packages unless --packages is given. A "
        "photo whose file differs from the labelled sha256 is skipped with a warning.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--packages",
        help="folder where the Debian packages were unpacked, one sub-folder per package "
        "(default: fetch them with apt-get)",
    )
    p.add_argument("--labels", help="another label file of the same schema (default: shipped)")
    p.set_defaults(func=_cmd_photos)


def _cmd_photos(args: argparse.Namespace) -> int:
    from captioner.data.real_photos import generate_photos

    print(json.dumps(generate_photos(args.out, args.packages, args.labels), indent=2))
    return 0
