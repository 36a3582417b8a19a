"""`captioner serve` hands over to the service's own command, which owns its settings.

Fast: nothing here binds a port or loads a full model (uvicorn.run is replaced where a test
would reach it).
"""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import captioner
from captioner import cli
from service import runtime, serve
from service.runtime import LoadedModels, load_models
from service.settings import Settings
from tests.service_helpers import ROOT, free_port


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            names += [a.value for a in node.args if isinstance(a, ast.Constant)]
    return names


def test_the_library_never_imports_the_service() -> None:
    package = Path(captioner.__file__).parent
    modules = sorted(package.rglob("*.py"))
    assert len(modules) > 10
    for path in modules:
        found = [n for n in _imports(ast.parse(path.read_text())) if n.split(".")[0] == "service"]
        assert not found, f"{path.relative_to(ROOT)} imports {found}"


def test_captioner_serve_execs_python_m_service_with_every_argument(monkeypatch) -> None:
    calls = []

    def fake_execv(path: str, argv: list[str]) -> None:
        calls.append((path, argv))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", fake_execv)
    before = dict(os.environ)
    args = ["--port", "9", "--max-wait-ms", "2", "--help"]
    with pytest.raises(SystemExit):
        cli.main(["serve", *args])
    assert calls == [(sys.executable, [sys.executable, "-m", "service", *args])]
    assert dict(os.environ) == before


def test_captioner_serve_help_is_the_services_help() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "captioner", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: captioner serve")
    for flag in ("--allow-partial", "--max-queue", "--no-activity", "--device", "--log-level"):
        assert flag in out.stdout


def _settings(argv: list[str]) -> Settings:
    return serve.settings_from(serve.build_parser().parse_args(argv))


def test_options_override_the_environment_which_still_works(monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith("CAPTIONER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CAPTIONER_MAX_QUEUE", "5")
    monkeypatch.setenv("CAPTIONER_DEVICE", "cpu")
    before = dict(os.environ)
    assert _settings([]).max_queue == 5
    s = _settings(["--max-queue", "7", "--no-activity", "--allow-partial", "--port", "9000"])
    assert (s.max_queue, s.device, s.port) == (7, "cpu", 9000)
    assert (s.enable_activity, s.enable_caption, s.allow_partial) == (False, True, True)
    assert dict(os.environ) == before  # read, never written


def test_bad_values_exit_2_with_one_line_naming_the_setting(capsys, monkeypatch) -> None:
    assert serve.main(["--max-wait-ms", "-5", "--max-queue", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "max_wait_ms (--max-wait-ms / CAPTIONER_MAX_WAIT_MS)" in err
    assert "max_queue" in err
    assert serve.main(["--no-caption", "--no-activity"]) == 2
    assert "enable at least one" in capsys.readouterr().err


def _never_serve(*args, **kwargs) -> None:
    raise AssertionError("uvicorn started although the models did not load")


def test_a_bundle_that_cannot_load_stops_before_the_port_opens(capsys, monkeypatch, tmp_path):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", _never_serve)
    monkeypatch.setattr(runtime, "configure_process", lambda s: None)
    missing = tmp_path / "no-bundle-here"
    code = serve.main(["--caption-bundle", str(missing), "--no-activity", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("captioner serve: cannot load the caption model")
    assert str(missing) in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_stops_with_the_reason(tiny_bundle: Path) -> None:
    settings = Settings(caption_bundle=str(tiny_bundle), enable_activity=False, device="cuda")
    with pytest.raises(RuntimeError, match="no CUDA GPU") as info:
        load_models(settings)
    assert "\n" not in str(info.value)


def test_allow_partial_serves_what_loaded_and_names_what_did_not(tiny_bundle, tmp_path) -> None:
    settings = Settings(
        caption_bundle=str(tiny_bundle),
        activity_bundle=str(tmp_path / "missing"),
        device="cpu",
        warmup=False,
    )
    with pytest.raises(RuntimeError, match="activity model"):
        load_models(settings)
    models = load_models(settings.model_copy(update={"allow_partial": True}))
    assert isinstance(models, LoadedModels)
    assert models.captioner is not None
    assert models.activity is None
    assert "missing" in models.failures["activity"]
    assert models.captioner.limits.max_pixels == settings.max_image_pixels


def test_thread_counts_default_from_the_cores_and_are_applied_at_start_up(monkeypatch) -> None:
    import cv2

    from service.settings import usable_cores

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    s = Settings(decode_workers=1)
    assert s.torch_threads == usable_cores()
    assert s.cv2_threads == max(1, usable_cores() // 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert Settings().torch_threads == 3
    assert Settings(torch_threads=2).torch_threads == 2
    import captioner.video.intake as intake

    # As in a fresh process: nothing has restricted FFmpeg yet, and the variable is unset.
    monkeypatch.setattr(intake, "_restricted", False)
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    before = torch.get_num_threads(), cv2.getNumThreads()
    try:
        runtime.configure_process(Settings(torch_threads=1, cv2_threads=1))
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (1, 1)
        assert "protocol_whitelist;file" in os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"]
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def test_a_taken_port_stops_before_the_models_load(capsys, monkeypatch) -> None:
    def never(settings):
        raise AssertionError("the models loaded although the port is taken")

    monkeypatch.setattr(runtime, "load_models", never)
    monkeypatch.setattr(runtime, "configure_process", never)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = serve.main(["--port", str(port), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == serve.EXIT_ADDRESS == 3, err
    assert len(err.splitlines()) == 1, err
    assert f"port {port} is already in use" in err
    assert "--port" in err


def test_an_address_not_on_this_machine_is_named(capsys) -> None:
    with pytest.raises(serve.AddressError, match="not an address of this machine"):
        serve.bind("192.0.2.1", free_port())  # TEST-NET-1: never a local address
    with pytest.raises(serve.AddressError, match="cannot resolve --host"):
        serve.bind("no-such-host.invalid", free_port())
    sock = serve.bind("127.0.0.1", 0)  # a free address: bound, not yet listening
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


def test_every_exit_status_is_in_the_help_and_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Serve it over HTTP") :]
    section = section[: section.index("\n## ", 3)]
    helptext = " ".join(serve.build_parser().format_help().split())
    assert sorted(serve.EXIT_STATUSES) == [0, 1, 2, 3]
    for code in serve.EXIT_STATUSES:
        assert re.search(rf"^\| `{code}` \|", section, re.M), f"README: no row for status {code}"
        assert f"{code} " in helptext
