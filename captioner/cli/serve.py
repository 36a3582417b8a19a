"""``captioner serve`` and ``captioner export``."""

from __future__ import annotations

import argparse
import json

from captioner.cli.options import positive


def add_serve(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="run the HTTP service (uvicorn, one process owning the models)",
        description="Serve /v1/caption and /v1/activity with dynamic batching, the upload page "
        "at /, /docs, /healthz, /readyz and /metrics. Every option can also be set through "
        "its CAPTIONER_<NAME> environment variable (e.g. CAPTIONER_API_KEY).",
    )
    p.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 in Docker)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--caption-bundle", help="caption bundle folder (default: shipped)")
    p.add_argument("--activity-bundle", help="activity bundle folder (default: shipped)")
    p.add_argument("--no-caption", action="store_true", help="do not serve captions")
    p.add_argument("--no-activity", action="store_true", help="do not serve activity labels")
    p.add_argument("--max-batch-size", type=positive, help="items per batch (default 16)")
    p.add_argument("--max-wait-ms", type=float, help="wait for a batch to fill (default 10)")
    p.add_argument("--max-queue", type=positive, help="queued items before 429 (default 256)")
    p.add_argument("--request-timeout-s", type=float, help="deadline in the queue (504)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="default: info"
    )
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    import os
    import signal

    try:
        import uvicorn
        from pydantic import ValidationError

        from service.settings import Settings
    except ImportError as exc:
        raise ValueError(f"the service needs its packages ({exc}); run: pip install -e .") from exc
    names = [
        "host",
        "port",
        "caption_bundle",
        "activity_bundle",
        "max_batch_size",
        "max_wait_ms",
        "max_queue",
        "request_timeout_s",
        "device",
        "log_level",
    ]
    for name in names:
        value = getattr(args, name)
        if value is not None:
            os.environ[f"CAPTIONER_{name.upper()}"] = str(value)
    if args.no_caption:
        os.environ["CAPTIONER_ENABLE_CAPTION"] = "false"
    if args.no_activity:
        os.environ["CAPTIONER_ENABLE_ACTIVITY"] = "false"
    try:
        settings = Settings()  # refuse bad values here, with a clear message, not in a worker
    except ValidationError as exc:
        raise ValueError(f"invalid service settings:\n{exc}") from None
    # uvicorn re-raises the signal that stopped it once it has shut down; after a graceful
    # SIGTERM that is success, so the re-raised one is ignored and the exit status is 0.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.run(
            "service.app:create_app",
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
