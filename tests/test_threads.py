"""OMP_WAIT_POLICY=PASSIVE before torch loads, in every entry point, and never over the user's.

Each program runs in a subprocess with ``OMP_DISPLAY_ENV=VERBOSE``: libgomp then prints the
settings it read when torch loaded it, so the test sees the policy as torch runs under it
(``GOMP_SPINCOUNT`` 0 is passive; the default spins 300000 times, ACTIVE 30 billion).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captioner._threads import WAIT_POLICY, prefer_passive_wait

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "captioner"  # the console script of this environment
# The settings display is libgomp's (the OpenMP of torch's Linux wheels).
LIBGOMP = any((Path(torch.__file__).parent / "lib").glob("libgomp*"))
# `export` of a missing bundle: the cheapest command that loads torch (then exits 2).
LOADS_TORCH = ["export", "no-such-bundle", "--format", "torchscript", "--out", "x"]


def _openmp(argv: list[str], policy: str | None, cwd: Path) -> tuple[str, str]:
    """Run ``argv`` with OMP_WAIT_POLICY as given (None: unset) -> (policy, spin count) as
    libgomp read them."""
    env = {k: v for k, v in os.environ.items() if k != WAIT_POLICY}
    env.update(OMP_DISPLAY_ENV="VERBOSE", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    if policy is not None:
        env[WAIT_POLICY] = policy
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=cwd)
    shown = dict(re.findall(r"^\s*(OMP_WAIT_POLICY|GOMP_SPINCOUNT) = '(\w+)'", done.stderr, re.M))
    assert shown, f"torch was not loaded: {done.stderr[-2000:]}"
    return shown["OMP_WAIT_POLICY"], shown["GOMP_SPINCOUNT"]


ENTRY_POINTS = {
    "console script": [str(SCRIPT), *LOADS_TORCH],
    "python -m captioner": [sys.executable, "-m", "captioner", *LOADS_TORCH],
    # python -m service, captioner serve (an exec of it) and uvicorn's factory import this
    "service": [sys.executable, "-c", "import service.app, torch"],
    "bench": [sys.executable, "-c", "import sys; sys.path.insert(0, 'bench'); import _common"],
}
pytestmark = pytest.mark.skipif(not LIBGOMP, reason="needs torch built with libgomp")


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=str)
def test_entry_points_wait_passively(entry, tmp_path) -> None:
    if entry == "console script" and not SCRIPT.exists():
        pytest.skip("the captioner console script is not installed in this environment")
    cwd = ROOT if entry == "bench" else tmp_path
    assert _openmp(ENTRY_POINTS[entry], None, cwd) == ("PASSIVE", "0")


@pytest.mark.parametrize("entry", ["python -m captioner", "service"])
def test_a_policy_the_user_gave_is_kept(entry, tmp_path) -> None:
    argv = ENTRY_POINTS[entry]
    assert _openmp(argv, "active", tmp_path) == ("ACTIVE", "30000000000")
    if entry == "service":  # empty is no choice: libgomp would say so and spin anyway
        assert _openmp(argv, "", tmp_path) == ("PASSIVE", "0")


def test_importing_the_library_leaves_the_environment_alone(tmp_path) -> None:
    # A program embedding captioner decides for itself: the default policy, spinning.
    argv = [sys.executable, "-c", "import captioner, captioner.inference, torch"]
    assert _openmp(argv, None, tmp_path) == ("PASSIVE", "300000")


def test_every_bench_sets_the_policy_before_torch_loads() -> None:
    # _omp sets it; _common imports _omp first. Anything else of these loads torch.
    setters, loaders = {"_omp", "_common"}, {"torch", "captioner", "service"}
    for path in sorted((ROOT / "bench").glob("*.py")):
        if path.name == "_omp.py":  # the setter itself: captioner._threads, no torch
            continue
        names = []
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                names += [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module.split(".")[0])
        first = next((n for n in names if n in setters | loaders), None)
        assert first is None or first in setters, f"{path.name}: import _omp before {first}"


def test_prefer_passive_wait_keeps_a_given_value(monkeypatch) -> None:
    monkeypatch.delenv(WAIT_POLICY, raising=False)
    assert prefer_passive_wait() == "PASSIVE"
    assert os.environ[WAIT_POLICY] == "PASSIVE"
    monkeypatch.setenv(WAIT_POLICY, " ")
    assert prefer_passive_wait() == "PASSIVE"
    monkeypatch.setenv(WAIT_POLICY, "active")
    assert prefer_passive_wait() == "active"
    assert os.environ[WAIT_POLICY] == "active"
