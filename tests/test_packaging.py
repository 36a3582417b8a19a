"""A normal (non-editable) install: the wheel carries the shipped bundles and loads them; the
base install is the runtime only, the extras bring the rest, and the tested versions are pinned
in constraints.txt, which every install of `make` uses.

The wheel is built from a copy of the project's files with the venv's own setuptools (offline),
installed with ``pip --target`` into a temporary folder, and used from a subprocess whose
working directory and import path do not include the source tree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "scene-0.jpg"
SHIPPED = {
    "captioner/_weights/caption-default/manifest.json",
    "captioner/_weights/caption-default/decoder.safetensors",
    "captioner/_weights/activity-default/manifest.json",
    "captioner/_weights/activity-default/model.safetensors",
    "captioner/data/stamp_nouns.tsv",  # the object bank's reviewed tables
    "captioner/data/background_phrases.tsv",
    "captioner/data/real_photos.json",  # the real-photo evaluation's hand labels
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


@pytest.mark.slow
def test_the_wheel_carries_both_shipped_bundles(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert names >= SHIPPED
    assert "captioner/bundle/manifest.py" in names
    assert "service/app.py" in names
    assert not any(n.startswith("weights/") for n in names)  # no stray top-level package
    for task in ("caption", "activity"):
        shipped = json.loads((ROOT / "weights" / f"{task}-default" / "manifest.json").read_text())
        with zipfile.ZipFile(wheel) as zf:
            packed = json.loads(zf.read(f"captioner/_weights/{task}-default/manifest.json"))
        assert packed == shipped


@pytest.mark.slow
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
    assert Path(caption_dir).is_relative_to(site)
    assert Path(activity_dir).is_relative_to(site)
    assert (caption_type, activity_type) == ("Captioner", "ActivityClassifier")


@pytest.mark.slow
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
    assert row["tags"][0]["name"]
    assert row["out_of_domain"] is False


# -- what each install brings, and at which versions ----------------------------------------

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: Libraries only the data generators, the tests, export or TensorBoard use.
NOT_RUNTIME = {
    "scikit-image",
    "scipy",
    "pytest",
    "ruff",
    "selenium",
    "schemathesis",
    "hypothesis",
    "httpx",
    "pycocoevalcap",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "tensorboard",
}


def _requirements(lines: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"constraints.txt pins exact versions: {line}"
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_the_base_install_is_the_runtime_only() -> None:
    base = _requirements(PROJECT["dependencies"])
    assert not set(base) & NOT_RUNTIME, "a data, test or export library in the base install"
    extras = PROJECT["optional-dependencies"]
    assert "scikit-image" in _requirements(extras["data"])
    assert {"onnx", "onnxruntime"} <= set(_requirements(extras["export"]))
    dev = _requirements(extras["dev"])
    assert {"data", "export"} <= dev["captioner"].extras  # the tests need both
    assert "pytest" in dev
    assert "ruff" in dev


def test_torch_is_a_range_and_constraints_hold_the_tested_versions() -> None:
    base = _requirements(PROJECT["dependencies"])
    pins = _constraints()
    assert pins["torch"] == "2.14.1"
    assert pins["torchvision"] == "0.29.1"
    for name in ("torch", "torchvision"):
        assert all(s.operator != "==" for s in base[name].specifier), f"{name} pinned exactly"
    declared = dict(base)
    for extra in PROJECT["optional-dependencies"].values():
        declared |= {k: v for k, v in _requirements(extra).items() if k != "captioner"}
    for name, req in declared.items():
        assert name in pins, f"{name} has no tested version in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt's {name}=={pins[name]} is outside pyproject's {req.specifier}"
        )


def test_make_run_installs_the_base_and_every_install_uses_the_constraints() -> None:
    makefile = (ROOT / "Makefile").read_text()
    rules = dict(re.findall(r"^([\w$().-]+):([^=\n]*)$", makefile, re.M))
    assert rules["run"].split() == ["$(BASE)"]
    for target in ("test", "test-fast", "lint"):
        assert rules[target].split() == ["$(DEV)"], target
    installs = re.findall(r"^\t(.*pip install.*)$", makefile, re.M) + [
        line for line in makefile.splitlines() if line.startswith("PIP ")
    ]
    assert installs
    assert all("-c constraints.txt" in line or "$(PIP)" in line for line in installs)
    assert re.search(r"^\$\(BASE\):.*\n\t\$\(PIP\) -e \.\n", makefile, re.M)
    assert re.search(r"^\$\(DEV\):.*\n\t\$\(PIP\) -e '\.\[dev\]'\n", makefile, re.M)


def test_ci_runs_the_lint_and_the_readme_test_command() -> None:
    commands = [ln.strip() for ln in (ROOT / ".ci/run").read_text().splitlines()]
    assert any(c.startswith("make lint") for c in commands)
    assert any(c.startswith("make test") for c in commands)
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme
    assert "make lint" in readme


def test_no_runtime_module_imports_the_data_generators_libraries() -> None:
    """With scikit-image and scipy missing, every module of the library and the service still
    imports: only the generators' functions load them, when they run."""
    code = (
        "import importlib, pkgutil, sys\n"
        "for name in ('skimage', 'scipy'):\n"
        "    sys.modules[name] = None  # `import skimage` now raises ImportError\n"
        "import captioner, service\n"
        "for pkg in (captioner, service):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if not info.name.endswith('__main__'):\n"
        "            importlib.import_module(info.name)\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok", done.stderr[-3000:]
