"""The two peers that ``bench/service_peers.py`` sets against ``captioner serve``.

    python bench/_peer_servers.py litserve --port N [--max-batch-size 16] [--max-wait-ms 10]
    python bench/_peer_servers.py plain --port N

``litserve``: a LitServe server (run it with the Python of a virtual environment that has
litserve) whose ``LitAPI`` decodes each upload with the model's own ``load_image`` and whose
``predict`` hands the batch to the model's ``caption_batch`` on a worker thread (a
single-thread executor, as our model worker), with LitServe's batching (``max_batch_size``,
``batch_timeout``). ``plain``: a FastAPI endpoint without batching, one request = one
``model.caption`` call in FastAPI's threadpool.

Both load the same bundle as ``captioner serve`` (``captioner.load()``, the shipped caption
model), with the same torch thread count, the encoder runtime of ``$CAPTIONER_ENCODER_RUNTIME``
(the bench sets it for all three servers) and one warm-up call; both answer
``POST /v1/caption`` (multipart field ``file``) with the service's per-image record
(``to_record(details=True)``) and a ``timings`` object, and ``GET /health`` once ready. Loopback
only.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _omp  # noqa: F401  (first: the OpenMP wait policy, before torch loads)

# at module level: FastAPI resolves the endpoint's annotations (strings, under `from __future__
# import annotations`) from this module's globals
from fastapi import FastAPI, File, UploadFile

HOST = "127.0.0.1"
ROUTE = "/v1/caption"
log = logging.getLogger("peer")


def load_model(threads: int | None):
    """The shipped caption model, as ``captioner serve`` loads it, warmed up."""
    import torch

    import captioner
    from captioner.inference.common import encoder_runtime

    if threads:
        torch.set_num_threads(threads)
    model = captioner.load(device="cpu")
    size = model.preprocess.size
    model.caption_batch([torch.zeros(3, size, size, dtype=torch.uint8)])
    runtime = encoder_runtime(model.encoder, model.device)
    print(f"peer: encoder runtime {runtime}, torch threads {torch.get_num_threads()}", flush=True)
    return model


def answer(result, compute_s: float, batch_size: int) -> dict:
    """The body both peers send: the service's record of the image, and timings."""
    timings = {"compute_ms": round(compute_s * 1000, 2), "batch_size": batch_size}
    return {"results": [result.to_record(details=True)], "timings": timings}


# --------------------------------------------------------------------------------- LitServe


try:  # only in the environment that has LitServe (bench/service_peers.py makes one)
    import litserve as ls
except ImportError:
    ls = None

if ls is not None:

    class CaptionAPI(ls.LitAPI):
        """At module level: LitServe pickles it into its inference worker process."""

        def __init__(self, threads: int | None, **kwargs) -> None:
            super().__init__(**kwargs)
            self.threads = threads

        def setup(self, device: str) -> None:
            self.model = load_model(self.threads)
            self.worker = ThreadPoolExecutor(1, "peer-model")

        def decode_request(self, request):
            return self.model.load_image(request["file"].file.read())

        def batch(self, inputs):
            return list(inputs)  # caption_batch stacks them itself

        def predict(self, x):
            start = time.perf_counter()
            results = self.worker.submit(self.model.caption_batch, x).result()
            spent = time.perf_counter() - start
            return [(r, spent, len(x)) for r in results]

        def unbatch(self, output):
            return output

        def encode_response(self, output):
            return answer(*output)


def serve_litserve(args: argparse.Namespace) -> None:
    if ls is None:
        raise SystemExit("litserve is not installed in this Python; see bench/service_peers.py")
    api = CaptionAPI(
        args.threads,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.max_wait_ms / 1000,
        api_path=ROUTE,
    )
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, timeout=60)
    server.run(
        host=HOST,
        port=args.port,
        log_level="warning",
        generate_client_file=False,
        api_server_worker_type=args.api_server,
        num_api_servers=1,
    )


# ----------------------------------------------------------------------------- plain FastAPI


def serve_plain(args: argparse.Namespace) -> None:
    import uvicorn

    model = load_model(args.threads)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post(ROUTE)
    def caption(file: UploadFile = File(...)) -> dict:  # noqa: B008  (FastAPI's own idiom)
        data = file.file.read()
        start = time.perf_counter()
        result = model.caption(data)
        return answer(result, time.perf_counter() - start, 1)

    uvicorn.run(app, host=HOST, port=args.port, log_level="warning")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=["litserve", "plain"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument(
        "--api-server",
        choices=["process", "thread"],
        default="process",
        help="LitServe's api_server_worker_type (its HTTP server as a process or a thread)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    (serve_litserve if args.kind == "litserve" else serve_plain)(args)


if __name__ == "__main__":
    main()
