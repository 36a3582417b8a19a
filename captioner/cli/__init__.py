"""The ``captioner`` command: caption folders, label videos, generate data, train, evaluate,
serve and export. Each subcommand parses its options and calls the library."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

from captioner._threads import prefer_passive_wait
from captioner.cli import calibrate, evaluate, jobs, serve, train
from captioner.cli.options import check_device

log = logging.getLogger("captioner")


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default after its help, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        # `is`, not `in (None, False)`: a default of 0 or 0.0 equals False and is still shown.
        unset = default is None or default is False or default is argparse.SUPPRESS
        if "default" in text or unset or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class CommandParser(argparse.ArgumentParser):
    """Every (sub)command: defaults shown in help, and ``-v`` / ``-q`` accepted after it."""

    def __init__(self, *args, verbosity: bool = True, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        if verbosity:
            # SUPPRESS: given after the subcommand they set the flag, absent they keep the
            # value given before it (argparse would otherwise reset it to False).
            self.add_argument(
                "-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                help="debug logging",
            )  # fmt: skip
            self.add_argument(
                "-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                help="warnings and errors only, no progress bars",
            )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The ``captioner`` argument parser with every subcommand."""
    from captioner import __version__

    parser = CommandParser(
        prog="captioner",
        description="CNN + LSTM image captioning and video activity recognition: caption "
        "images, label videos, generate data, train, evaluate, serve, export.",
        verbosity=False,
    )
    parser.add_argument("--version", action="version", version=f"captioner {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    jobs.add_caption(sub)
    jobs.add_activity(sub)
    jobs.add_merge(sub)
    train.add_data(sub)
    train.add_train(sub)
    evaluate.add_evaluate(sub)
    calibrate.add_calibrate(sub)
    serve.add_serve(sub)
    serve.add_export(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``captioner`` console script; returns the exit status.

    Parsing, ``--help`` and ``--version`` import no torch: each command imports what it needs.
    """
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    fmt = "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)
    logging.getLogger().setLevel(level)  # also when logging was configured before (embedding)
    from captioner.progress import set_quiet
    from captioner.records import OutputError

    set_quiet(args.quiet)
    try:
        if getattr(args, "device", None) is not None:
            check_device(args.device)  # before any model loads
        if args.command == "data":
            _require_data_extra()
        return int(args.func(args) or 0)
    except OutputError as exc:  # the run itself failed: rows written so far are kept
        log.error("%s", exc.strerror)
        return 1
    except (ValueError, FileNotFoundError) as exc:  # BundleError and MediaError among them
        log.error("%s", exc)
        return 2
    except RuntimeError as exc:
        from captioner.encoders import EncoderError  # loaded already when it was raised

        if not isinstance(exc, EncoderError):
            raise
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        out = getattr(args, "out", None) if args.command in ("caption", "activity") else None
        if out:
            log.error("interrupted: the rows finished so far are in %s; run the same command "
                      "with --resume to do the rest", out)  # fmt: skip
        else:
            log.error("interrupted")
        return INTERRUPTED


def _require_data_extra() -> None:
    """The data generators draw on scikit-image, which only the ``data`` extra installs."""
    try:
        import skimage  # noqa: F401
    except ImportError:
        raise ValueError(
            "captioner data needs the data generators' libraries (scikit-image), which a plain "
            "install leaves out: pip install 'captioner[data]'"
        ) from None


#: Exit status after Ctrl-C (SIGINT), as shells report it: 128 + 2.
INTERRUPTED = 130


def console() -> int:
    """The ``captioner`` console script and ``python -m captioner``: :func:`main`, and after
    Ctrl-C an immediate exit, without the second or so that unloading torch takes (every row
    is already written and the output file closed).

    Before anything loads torch it sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it
    (see :mod:`captioner._threads`); :func:`main`, called by a program that embeds the
    command, leaves the environment to that program.
    """
    prefer_passive_wait()
    status = main()
    if status == INTERRUPTED:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing can reach it
                stream.flush()
        os._exit(status)
    return status


if __name__ == "__main__":
    sys.exit(console())
