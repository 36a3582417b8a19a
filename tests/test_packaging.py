"""A normal (non-editable) install: the wheel carries the shipped bundles and loads them.

The wheel is built from a copy of the project's files with the venv's own setuptools (offline),
installed with ``pip --target`` into a temporary folder, and used from a subprocess whose
working directory and import path do not include the source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "scene-0.jpg"
SHIPPED = {
    "captioner/_weights/caption-default/manifest.json",
    "captioner/_weights/caption-default/decoder.safetensors",
    "captioner/_weights/activity-default/manifest.json",
    "captioner/_weights/activity-default/model.safetensors",
    "captioner/data/stamp_nouns.tsv",  # the object bank's reviewed tables
    "captioner/data/background_phrases.tsv",
}


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args, "--no-deps", "--no-index", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a clean copy of what the Dockerfile and sdist would see."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("captioner", "service", "weights"):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=skip)
    dist = tmp_path_factory.mktemp("dist")
    _pip("wheel", "--no-build-isolation", "-w", str(dist), str(src))
    (built,) = dist.glob("captioner-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    _pip("install", "--target", str(target), str(wheel))
    return target


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python ARGS`` seeing only the installed wheel: no source tree, no bundle variables."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_BUNDLE")}
    env["PYTHONPATH"] = str(site)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_wheel_carries_both_shipped_bundles(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert SHIPPED <= names
    assert "captioner/bundle/manifest.py" in names and "service/app.py" in names
    assert not any(n.startswith("weights/") for n in names)  # no stray top-level package
    for task in ("caption", "activity"):
        shipped = json.loads((ROOT / "weights" / f"{task}-default" / "manifest.json").read_text())
        with zipfile.ZipFile(wheel) as zf:
            packed = json.loads(zf.read(f"captioner/_weights/{task}-default/manifest.json"))
        assert packed == shipped


def test_the_installed_package_loads_its_shipped_bundles(site: Path, tmp_path: Path) -> None:
    code = (
        "import captioner\n"
        "from captioner.bundle import shipped_bundle_dir\n"
        "print(captioner.__file__)\n"
        "for task in ('caption', 'activity'):\n"
        "    folder = shipped_bundle_dir(task)\n"
        "    m = captioner.load(folder, device='cpu')\n"
        "    print(folder, type(m).__name__)\n"
    )
    done = _run(site, tmp_path, "-c", code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert Path(lines[0]).is_relative_to(site)  # the wheel's copy, not the source tree
    (caption_dir, caption_type), (activity_dir, activity_type) = (s.split() for s in lines[1:])
    assert Path(caption_dir).is_relative_to(site) and Path(activity_dir).is_relative_to(site)
    assert (caption_type, activity_type) == ("Captioner", "ActivityClassifier")


def test_the_installed_defaults_load_and_caption(site: Path, tmp_path: Path) -> None:
    code = "import captioner; m = captioner.load(device='cpu'); print(type(m).__name__)"
    done = _run(site, tmp_path, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Captioner"]
    done = _run(site, tmp_path, "-m", "captioner", "caption", str(EXAMPLE), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert row["caption"]
    # The concept table and the bundle's calibration are package data too.
    assert row["tags"][0]["name"] and row["out_of_domain"] is False
