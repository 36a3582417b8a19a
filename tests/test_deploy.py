"""The Docker files, checked without a Docker engine.

The Dockerfile and docker-compose.yml cannot be built here, so these tests read them and check
what would break a deployment: a compose target with no matching stage, a health check on the
wrong port or route, a root user, a GPU reservation compose would refuse, a `${VAR}` with no
default, an environment variable the service does not know, a bundle path outside the mounted
volume, a torch that is not the tested one (constraints.txt). With the `docker compose` CLI
present, the file also goes through `docker compose config`.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
TARGETS = ("cpu", "cuda")
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}
VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}")


# -- reading the Dockerfile ------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def _logical_lines(text: str) -> list[str]:
    """Instructions with continuations joined and comment lines dropped, as Docker reads them."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def read_dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    """-> (global ARG defaults, stages by name)."""
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in _logical_lines(DOCKERFILE.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            assert len(parts) == 3, f"unnamed stage: FROM {rest}"
            assert parts[1].upper() == "AS", f"unnamed stage: FROM {rest}"
            stage = Stage(parts[2], _expand(parts[0], global_args))
            stages[stage.name] = stage
        elif stage is None:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = rest.partition("=")
            global_args[name] = default
        else:
            stage.instructions.append((keyword, rest))
    return global_args, stages


def _expand(text: str, variables: dict[str, str]) -> str:
    return VAR.sub(lambda m: variables.get(m["name"], m["arg"] if m["op"] else ""), text)


def chain(stages: dict[str, Stage], target: str) -> list[tuple[str, str]]:
    """A target's instructions, including those of the stages it is built FROM."""
    stage = stages[target]
    inherited = chain(stages, stage.base) if stage.base in stages else []
    return inherited + stage.instructions


def last(instructions: list[tuple[str, str]], keyword: str) -> str:
    values = [rest for kw, rest in instructions if kw == keyword]
    assert values, f"no {keyword} instruction"
    return values[-1]


def env_vars(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """ENV key=value pairs (later ones win, as in the image)."""
    out: dict[str, str] = {}
    for kw, rest in instructions:
        if kw == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                out[key] = value
    return out


def exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list), f"not exec (JSON) form: {text}"
    return value


def served_port(cmd: list[str]) -> int:
    assert "--port" in cmd, f"CMD does not name its port: {cmd}"
    return int(cmd[cmd.index("--port") + 1])


# -- reading docker-compose.yml --------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


def defaults(value: object) -> str:
    """A compose value as it is with no variables set: every ${VAR:-d} replaced by d."""
    return _expand(str(value), {})


def container_env(service: dict) -> dict[str, str | None]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] if "=" in item else (item, None) for item in env)
    return {k: None if v is None else defaults(v) for k, v in env.items()}


def seconds(duration: str) -> float:
    """A compose duration ('1m30s', '45s', '500ms') in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    assert parts, f"bad duration {duration}"
    assert "".join(n + u for n, u in parts) == str(duration), f"bad duration {duration}"
    return sum(float(n) * units[u] for n, u in parts)


def targets_of(svc: dict) -> str:
    build = svc.get("build", "")  # none: a service from someone else's image (nginx)
    return "" if isinstance(build, str) else build.get("target", "")


# Every service that runs the captioner image (those built here); nginx is not one of them.
CAPTIONER_SERVICES = sorted(name for name, svc in services().items() if "build" in svc)


# -- the Dockerfile --------------------------------------------------------------------------


def test_dockerfile_has_a_cpu_and_a_cuda_target_on_the_expected_bases():
    _, stages = read_dockerfile()
    assert set(TARGETS) <= set(stages)

    def root_base(name: str) -> str:
        base = stages[name].base
        return root_base(base) if base in stages else base

    assert root_base("cpu").startswith("python:3.11-slim")
    assert root_base("cuda").startswith(("nvidia/cuda:12.", "pytorch/pytorch:"))


@pytest.mark.parametrize("target", TARGETS)
def test_image_runs_captioner_serve_as_non_root_on_the_exposed_port(target):
    _, stages = read_dockerfile()
    steps = chain(stages, target)
    user = last(steps, "USER").split(":")[0]
    assert user not in ("root", "0"), f"{target} runs as root"
    cmd = exec_form(last(steps, "CMD"))
    assert cmd[:2] == ["captioner", "serve"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0", "a container must listen beyond loopback"
    exposed = {int(p.split("/")[0]) for kw, rest in steps if kw == "EXPOSE" for p in rest.split()}
    assert served_port(cmd) in exposed


@pytest.mark.parametrize("target", TARGETS)
def test_image_healthcheck_probes_readyz_on_the_served_port(target):
    _, stages = read_dockerfile()
    steps = chain(stages, target)
    port = served_port(exec_form(last(steps, "CMD")))
    check = last(steps, "HEALTHCHECK")
    probe = exec_form(check[check.index("CMD") + 3 :].strip())
    assert f"127.0.0.1:{port}/readyz" in " ".join(probe)
    start = re.search(r"--start-period=(\S+)", check)
    assert start, "warm-up needs a start period"
    assert seconds(start[1]) >= 60, "warm-up needs a start period"


def constraints() -> dict[str, str]:
    """constraints.txt: package name -> the exact tested version."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


@pytest.mark.parametrize("target", TARGETS)
def test_image_installs_the_tested_torch_from_the_right_index(target):
    global_args, stages = read_dockerfile()
    assert {"torch", "torchvision"} <= set(constraints())
    runs = [rest for kw, rest in _build_steps(stages, target) if kw == "RUN"]
    torch_run = next(r for r in runs if re.search(r"\btorch torchvision\b", r))
    assert "-c /src/constraints.txt" in torch_run, "torch must be the tested version"
    index = "whl/cpu" if target == "cpu" else "whl/${TORCH_CUDA}"
    assert f"https://download.pytorch.org/{index}" in torch_run
    if target == "cuda":
        assert re.fullmatch(r"cu\d+", global_args["TORCH_CUDA"])
        assert global_args["TORCH_CUDA"].startswith("cu12"), "base image is CUDA 12"
        declared = {rest for kw, rest in _build_steps(stages, target) if kw == "ARG"}
        assert "TORCH_CUDA" in declared, "global ARGs need redeclaring"
    copies = [rest.split() for kw, rest in _build_steps(stages, target) if kw == "COPY"]
    assert any(c[0] == "constraints.txt" and c[-1].startswith("/src") for c in copies)
    # The project itself: the runtime (plus ONNX Runtime for the CPU encoder on the CPU image;
    # never [data] or [dev]) at the tested versions.
    pattern = r"pip install (\S+ )*\"?/src(\[\S*\])?\"?$"
    (install,) = [r for r in runs if re.search(pattern, r.strip())]
    assert "-c /src/constraints.txt" in install
    extras = re.findall(r"/src\[([^\]]*)\]", install)
    assert extras == (["export"] if target == "cpu" else [])


def _build_steps(stages: dict[str, Stage], target: str) -> list[tuple[str, str]]:
    """The instructions of the stage the target copies its /opt/venv from."""
    copy = next(rest for kw, rest in chain(stages, target) if kw == "COPY" and "/opt/venv" in rest)
    source = re.search(r"--from=(\S+)", copy)
    assert source
    assert source[1] in stages
    return chain(stages, source[1])


def test_the_installed_package_includes_the_service():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert any(fnmatch.fnmatch("service", pattern) for pattern in include)
    _, stages = read_dockerfile()
    copies = [rest for kw, rest in _build_steps(stages, "cpu") if kw == "COPY"]
    for needed in ("pyproject.toml", "README.md", "captioner", "service"):
        assert any(needed in c.split()[:-1] for c in copies), f"{needed} not copied"


@pytest.mark.parametrize("target", TARGETS)
def test_image_serves_the_bundles_installed_in_the_package(target):
    """weights/ is copied beside the source (captioner/_weights links to it) so that the
    bundles install as package data; the image sets no bundle path of its own."""
    _, stages = read_dockerfile()
    copies = [rest.split() for kw, rest in _build_steps(stages, target) if kw == "COPY"]
    assert ["weights", "/src/weights"] in [[c[0].rstrip("/"), c[-1].rstrip("/")] for c in copies]
    assert (ROOT / "captioner" / "_weights").resolve() == (ROOT / "weights").resolve()
    steps = chain(stages, target)
    assert not any(
        kw == "COPY" and "--from" not in rest and "weights" in rest for kw, rest in steps
    )
    env = env_vars(steps)
    assert not {k for k in env if k.endswith("_BUNDLE")}, "the image's own bundles are served"


def test_dockerignore_keeps_local_state_out_but_not_what_the_image_needs():
    patterns = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or path.startswith(p + "/") for p in patterns)

    for path in (".venv", "data", "runs", "bench/_work", ".git", "captioner/__pycache__"):
        assert ignored(path), f"{path} would be sent to the Docker daemon"
    for path in (
        "pyproject.toml",
        "constraints.txt",
        "README.md",
        "captioner/cli/__init__.py",
        "service/app.py",
        "weights",
    ):
        assert not ignored(path), f"{path} is needed by the Dockerfile"


# -- docker-compose.yml ----------------------------------------------------------------------


def test_compose_services_build_existing_dockerfile_targets():
    _, stages = read_dockerfile()
    svcs = services()
    assert "captioner" in svcs
    built = set()
    for name, svc in svcs.items():
        assert "image" in svc or "build" in svc, f"{name}: needs image or build"
        if "build" in svc:
            build = svc["build"] if isinstance(svc["build"], dict) else {"context": svc["build"]}
            context = ROOT / build.get("context", ".")
            assert (context / build.get("dockerfile", "Dockerfile")).is_file()
            assert build.get("target") in stages, f"{name}: no stage {build.get('target')}"
            built.add(build["target"])
    assert targets_of(svcs["captioner"]) == "cuda"
    assert set(TARGETS) <= built, "both images selectable from compose"
    # Services outside a profile start together: the CPU variant must not join a GPU `up`.
    assert not svcs["captioner"].get("profiles")
    # ... and neither may the replicas or their nginx, which would take the same port and GPUs.
    assert [name for name, svc in svcs.items() if not svc.get("profiles")] == ["captioner"]
    assert all(svc.get("profiles") for svc in svcs.values() if targets_of(svc) == "cpu")


@pytest.mark.parametrize("name", ["captioner", "captioner-cpu"])
def test_compose_publishes_and_health_checks_the_port_the_image_serves(name):
    _, stages = read_dockerfile()
    svc = services()[name]
    port = served_port(exec_form(last(chain(stages, targets_of(svc)), "CMD")))
    published = [defaults(p) if isinstance(p, str) else p for p in svc["ports"]]
    container_ports = [
        int(p.rsplit(":", 1)[-1].split("/")[0]) if isinstance(p, str) else int(p["target"])
        for p in published
    ]
    assert port in container_ports
    check = svc["healthcheck"]
    test = check["test"]
    assert test[0] in ("CMD", "CMD-SHELL")
    assert f"127.0.0.1:{port}/readyz" in " ".join(test)
    assert seconds(check["timeout"]) < seconds(check["interval"])
    assert int(check["retries"]) >= 1
    assert seconds(check["start_period"]) >= 60, "model load and warm-up need time"
    assert svc["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", CAPTIONER_SERVICES)
def test_stop_grace_period_outlasts_the_graceful_drain(name):
    svc = services()[name]
    timeout = float(container_env(svc).get("CAPTIONER_REQUEST_TIMEOUT_S") or _default_timeout())
    drain = timeout + 5  # what `captioner serve` gives uvicorn's graceful shutdown
    assert seconds(svc["stop_grace_period"]) > drain


def _default_timeout() -> float:
    settings = pytest.importorskip("service.settings", reason="service/settings.py not there")
    return settings.Settings.model_fields["request_timeout_s"].default


def test_gpu_service_reserves_one_nvidia_gpu_and_the_cpu_one_none():
    pinned: dict[str, str] = {}  # GPU id -> the replica service pinned to it
    for name in CAPTIONER_SERVICES:
        svc = services()[name]
        devices = svc.get("deploy", {}).get("resources", {}).get("reservations", {})
        devices = devices.get("devices", [])
        if targets_of(svc) == "cpu":
            assert not devices, f"{name}: the CPU image must run without a GPU"
            assert container_env(svc)["CAPTIONER_DEVICE"] == "cpu"
            continue
        assert isinstance(devices, list), name
        assert len(devices) == 1, name
        (device,) = devices
        assert device["driver"] == "nvidia"
        assert ("count" in device) != ("device_ids" in device), "count xor device_ids"
        if "count" in device:
            assert device["count"] == "all" or int(device["count"]) >= 1
        else:  # a replica: exactly one GPU of its own
            (gpu,) = device["device_ids"]
            assert str(gpu) not in pinned, f"{name} and {pinned.get(str(gpu))} share GPU {gpu}"
            pinned[str(gpu)] = name
        assert "gpu" in device["capabilities"]
        assert container_env(svc)["CAPTIONER_DEVICE"] in ("cuda", "auto")


def test_every_variable_has_a_default_or_is_documented():
    lines = COMPOSE.read_text().splitlines()
    comments = "\n".join(line for line in lines if line.lstrip().startswith("#"))
    body = "\n".join(line.split(" #")[0] for line in lines if not line.lstrip().startswith("#"))
    assert not re.search(r"\$(?![{$])[A-Za-z_]", body), "use ${VAR:-default}, not $VAR"
    used = list(VAR.finditer(body))
    assert used
    for m in used:
        documented = re.search(rf"\b{m['name']}\b", comments)
        assert m["op"] in (":-", "-") or documented, f"${{{m['name']}}}: no default, no docs"
    for svc in services().values():
        for key, value in container_env(svc).items():
            if value is None:  # passed through from the shell: say so for the user
                assert re.search(rf"\b{key}\b", comments), f"{key} passed through undocumented"


@pytest.mark.parametrize("name", CAPTIONER_SERVICES)
def test_bundles_point_into_the_weights_volume(name):
    svc = services()[name]
    (weights,) = [m for m in map(_mount, svc["volumes"]) if m["target"] == "/weights"]
    env = container_env(svc)
    for key in ("CAPTIONER_CAPTION_BUNDLE", "CAPTIONER_ACTIVITY_BUNDLE"):
        assert env[key], f"{key}={env[key]}"
        assert env[key].startswith("/weights/"), f"{key}={env[key]}"
    _assert_enabled_bundles_shipped(env, mount_source=ROOT / weights["source"])


def _mount(volume: str | dict) -> dict[str, str]:
    """A volume entry, short ('src:target[:ro]') or long syntax, with defaults filled in."""
    if isinstance(volume, dict):
        return {"source": defaults(volume.get("source", "")), "target": defaults(volume["target"])}
    source, target, *_ = defaults(volume).split(":")
    return {"source": source, "target": target}


def _assert_enabled_bundles_shipped(env: dict, mount_source: Path) -> None:
    """Each task the defaults enable has its bundle there: else /readyz never turns green."""
    for task in ("caption", "activity"):
        enabled = (env.get(f"CAPTIONER_ENABLE_{task.upper()}") or "true").lower()
        if enabled in ("false", "0", "no", "off"):
            continue
        folder = mount_source / Path(env[f"CAPTIONER_{task.upper()}_BUNDLE"]).name
        assert (folder / "manifest.json").is_file(), f"{task} enabled but {folder} is not there"


def _settings_fields() -> set[str]:
    settings = pytest.importorskip("service.settings", reason="service/settings.py not there")
    return set(settings.Settings.model_fields)


def test_environment_names_are_service_settings():
    fields = _settings_fields()
    _, stages = read_dockerfile()
    names = {k for t in TARGETS for k in env_vars(chain(stages, t))}
    names |= {k for svc in services().values() for k in container_env(svc)}
    names = {n for n in names if n.startswith("CAPTIONER_")}
    unknown = {n for n in names if n.removeprefix("CAPTIONER_").lower() not in fields}
    assert not unknown, f"not Settings fields (typo?): {sorted(unknown)}"


@pytest.mark.parametrize("name", CAPTIONER_SERVICES)
def test_compose_defaults_are_accepted_by_the_service(name, monkeypatch):
    _settings_fields()
    from service.settings import Settings

    for key in [k for k in os.environ if k.startswith("CAPTIONER_")]:
        monkeypatch.delenv(key)
    for key, value in container_env(services()[name]).items():
        if value is not None:
            monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.max_batch_size >= 1
    assert settings.api_key is None


def test_docker_compose_config_accepts_the_file():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI here")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("docker CLI has no compose plugin")
    for profile in ([], ["--profile", "cpu"], ["--profile", "replicas"]):
        result = subprocess.run(
            [docker, "compose", "-f", str(COMPOSE), *profile, "config", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stderr
