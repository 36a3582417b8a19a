"""``captioner serve`` (also ``python -m service``): settings once, the port, models, uvicorn.

The port is bound first, then the models load and warm up, then uvicorn serves on that
socket: a taken port fails in a moment, and a bundle that cannot load ends the process with a
one-line reason instead of a server that is up but never ready. Options override
``CAPTIONER_*`` variables; the environment is read, never written.

Exit statuses (:data:`EXIT_STATUSES`): 0 stopped by SIGTERM or Ctrl-C after a graceful
shutdown, 1 a model cannot load, 2 a bad option or setting, 3 the address cannot be bound
(port in use, no permission, host not on this machine) or the server failed to start.
"""

from __future__ import annotations

import argparse
import errno
import functools
import logging
import signal
import socket
import sys

from pydantic import ValidationError

from service.settings import Settings

log = logging.getLogger("captioner.service")

PROG = "captioner serve"
EXIT_OK, EXIT_MODEL, EXIT_SETTINGS, EXIT_ADDRESS = 0, 1, 2, 3
EXIT_STATUSES = {
    EXIT_OK: "stopped by SIGTERM or Ctrl-C, after finishing the requests in flight",
    EXIT_MODEL: "a model cannot load (wrong bundle folder, --device cuda without a GPU, ...)",
    EXIT_SETTINGS: "a bad option or CAPTIONER_* setting",
    EXIT_ADDRESS: "the address cannot be bound (port in use, no permission, host not on this "
    "machine), or the server failed to start",
}
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
        "given here wins over the variable. The port is taken first, then the models load. "
        "Exit status: " + "; ".join(f"{code} {why}" for code, why in EXIT_STATUSES.items()) + ".",
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


class AddressError(OSError):
    """The listening address cannot be bound; the message says why and what to do."""


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not listening yet), or :class:`AddressError`.

    Bound before the models load, so a taken port is known at once; uvicorn listens on this
    same socket later, so nothing can take the port in between.
    """
    where = f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise AddressError(
            f"cannot resolve --host {host!r} ({exc.strerror}); "
            "use an address such as 127.0.0.1 or 0.0.0.0"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
    except OSError as exc:
        sock.close()
        hints = {
            errno.EADDRINUSE: f"port {port} is already in use on {host}: stop the other "
            "server or choose another port with --port",
            errno.EACCES: f"no permission to listen on {where}: use a port above 1023 "
            "or run with the right privileges",
            errno.EADDRNOTAVAIL: f"{host} is not an address of this machine: use "
            "--host 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)",
        }
        reason = hints.get(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}")
        raise AddressError(reason) from None
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> int:
    """Parse, build the settings, bind the port, load the models, serve until SIGTERM or
    Ctrl-C. Returns the exit status (see :data:`EXIT_STATUSES`)."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        print(f"{PROG}: {describe(exc)}", file=sys.stderr)
        return EXIT_SETTINGS
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        sock = bind(settings.host, settings.port)
    except AddressError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_ADDRESS
    try:
        return _serve(settings, sock)
    finally:
        sock.close()


def _serve(settings: Settings, sock: socket.socket) -> int:
    import uvicorn

    from service.app import create_app
    from service.runtime import configure_process, load_models

    configure_process(settings)
    try:
        models = load_models(settings)
    except Exception as exc:  # one line for the operator, no traceback
        print(f"{PROG}: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_MODEL
    config = uvicorn.Config(
        functools.partial(create_app, settings, models=models),
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # the app writes its own line, with the request id (captioner.access)
        workers=1,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has shut down; after a graceful
    # stop that is success, so the re-raised one is only noted and the exit status is 0.
    stopped_by: list[int] = []
    wanted = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda sig, _: stopped_by.append(sig)) for sig in wanted}
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    log.info("serving on http://%s:%d once started (Ctrl-C to stop)", shown, settings.port)
    try:
        server.run(sockets=[sock])
    except SystemExit as exc:  # uvicorn's own start-up failure (its lifespan failed)
        log.error("the server failed to start (uvicorn exit %s)", exc.code)
        return EXIT_ADDRESS
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        return EXIT_ADDRESS
    names = ", ".join(signal.Signals(s).name for s in stopped_by) or "shutdown"
    log.info("stopped (%s); exit status 0", names)
    return EXIT_OK
