"""``captioner serve`` (also ``python -m service``): settings once, models loaded, then uvicorn.

The models load and warm up before the port is bound: a bundle that cannot load ends the
process with a one-line reason and a non-zero status instead of a server that is up but never
ready. Options override ``CAPTIONER_*`` variables; the environment is read, never written.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys

from pydantic import ValidationError

from service.settings import Settings

log = logging.getLogger("captioner.service")

PROG = "captioner serve"
# option -> Settings field, for those that map one to one
_VALUES = (
    ("--host", str, "address to bind (default 127.0.0.1; 0.0.0.0 in Docker)"),
    ("--port", int, "port (default 8000)"),
    ("--caption-bundle", str, "caption bundle folder (default: shipped)"),
    ("--activity-bundle", str, "activity bundle folder (default: shipped)"),
    ("--max-batch-size", int, "items per batch (default 16)"),
    ("--max-wait-ms", float, "wait for a batch to fill (default 10)"),
    ("--max-queue", int, "queued items before 429 (default 256)"),
    ("--request-timeout-s", float, "deadline for a request, queue included (504)"),
    ("--device", str, "auto | cpu | cuda | cuda:N"),
    ("--torch-threads", int, "threads for the model's CPU work (default: the cores)"),
    ("--cv2-threads", int, "OpenCV threads per decode worker"),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Serve /v1/caption and /v1/activity with dynamic batching, the upload page "
        "at /, /docs, /redoc, /healthz, /readyz and /metrics. Every setting can also be given "
        "as its CAPTIONER_<NAME> environment variable (e.g. CAPTIONER_API_KEY); an option "
        "given here wins over the variable. The models load before the port opens: a model "
        "that cannot load stops the command with exit status 1.",
    )
    for flag, kind, text in _VALUES:
        p.add_argument(flag, type=kind, help=text)
    p.add_argument("--no-caption", action="store_true", help="do not serve captions")
    p.add_argument("--no-activity", action="store_true", help="do not serve activity labels")
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="if one model fails to load, serve the other (and say so on /readyz)",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """One Settings object: the options given, over the ``CAPTIONER_*`` environment."""
    given = {flag[2:].replace("-", "_") for flag, _, _ in _VALUES} | {"log_level"}
    options = {name: getattr(args, name) for name in given if getattr(args, name) is not None}
    if args.no_caption:
        options["enable_caption"] = False
    if args.no_activity:
        options["enable_activity"] = False
    if args.allow_partial:
        options["allow_partial"] = True
    return Settings(**options)


def describe(exc: ValidationError) -> str:
    """A ValidationError in one line, naming each setting, its option and its variable."""
    parts = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            name = str(error["loc"][0])
            value = repr(error.get("input"))[:60]
            where = f"--{name.replace('_', '-')} / CAPTIONER_{name.upper()}"
            parts.append(f"{name} ({where}): {message}, got {value}")
        else:
            parts.append(message)
    return "invalid settings: " + "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Parse, build the settings, load the models, serve until SIGTERM or Ctrl-C."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        print(f"{PROG}: {describe(exc)}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    import uvicorn

    from service.app import create_app
    from service.runtime import configure_process, load_models

    configure_process(settings)
    try:
        models = load_models(settings)
    except Exception as exc:  # one line for the operator, no traceback
        print(f"{PROG}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    # uvicorn re-raises the signal that stopped it once it has shut down; after a graceful
    # SIGTERM that is success, so the re-raised one is ignored and the exit status is 0.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.run(
            functools.partial(create_app, settings, models=models),
            factory=True,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            workers=1,
            timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
