"""The ``captioner`` command: caption folders, label videos, generate data, train, evaluate,
serve and export. Each subcommand parses its options and calls the library."""

from __future__ import annotations

import argparse
import logging
import sys

from captioner.cli import evaluate, jobs, serve, train

log = logging.getLogger("captioner")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captioner",
        description="CNN + LSTM image captioning and video activity recognition: caption "
        "images, label videos, generate data, train, evaluate.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)
    jobs.add_caption(sub)
    jobs.add_activity(sub)
    jobs.add_merge(sub)
    train.add_data(sub)
    train.add_train(sub)
    evaluate.add_evaluate(sub)
    serve.add_serve(sub)
    serve.add_export(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``captioner`` console script."""
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    fmt = "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)
    from captioner.bundle import BundleError
    from captioner.encoders import EncoderError
    from captioner.media import MediaError

    try:
        return int(args.func(args) or 0)
    except (BundleError, EncoderError, MediaError, ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
