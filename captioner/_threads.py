"""The OpenMP wait policy the programs run under: ``OMP_WAIT_POLICY=PASSIVE`` before torch loads.

torch's CPU kernels run on OpenMP threads (libgomp), which by default spin for a while at
every barrier instead of sleeping. On a small machine that has other work to do, the spinning
threads take the cores from each other and from that work: with two other processes busy on
2 cores, in-process captioning ran at 2.2-3.6 images/s and 111-206 CPU-ms an image by
default, against 15.7-21.0 images/s and 18-36 CPU-ms with passive waiting
(``bench/omp_wait.py``, four runs; issue 18). ONNX Runtime's encoder has its own thread pool,
but the decoder is torch's: with it the default still fell to 3.1 images/s.

libgomp reads the variable once, when torch loads it, so :func:`prefer_passive_wait` must run
before the first ``import torch``. The entry points call it: the ``captioner`` command
(:func:`captioner.cli.console`, also ``python -m captioner``), the service package
(``service/__init__.py``: ``python -m service``, ``captioner serve``, uvicorn's factory) and
the benchmarks (``bench/_omp.py``). ``import captioner`` does not: a library that changes its
host's environment on import would surprise the program embedding it, which may have chosen
otherwise or loaded torch already; such a program sets the variable itself.

This module imports nothing but the standard library, so that anything can call it first.
"""

from __future__ import annotations

import os

__all__ = ["WAIT_POLICY", "prefer_passive_wait"]

#: The variable libgomp reads (``ACTIVE`` or ``PASSIVE``, any case).
WAIT_POLICY = "OMP_WAIT_POLICY"


def prefer_passive_wait() -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user gave it a value; returns the value in
    effect. An empty value counts as not given (libgomp would reject it and spin anyway).

    Call it before torch is imported: afterwards it only reaches child processes.
    """
    given = os.environ.get(WAIT_POLICY, "").strip()
    if not given:
        os.environ[WAIT_POLICY] = given = "PASSIVE"
    return given
