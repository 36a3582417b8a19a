"""Several replicas behind a load balancer: the deploy files, and two live replicas behind nginx.

The fast tests check that docker-compose.yml's replicas, deploy/nginx.conf and deploy/k8s/
agree with each other and with the service (routes, body limits, deadline, metric names).
The slow ones run deploy/nginx.conf itself on loopback, its upstream pointed at two
`captioner serve` processes: the load is shared, and a replica stopped with SIGTERM loses no
request. nginx comes from `.ci/ensure-nginx`; without it those tests skip, or fail in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from service.settings import Settings
from tests.service_helpers import EXAMPLES, ROOT, free_port
from tests.test_deploy import chain, container_env, exec_form, last, read_dockerfile, served_port
from tests.test_deploy import seconds as compose_seconds
from tests.test_deploy import services as compose_services

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
K8S = ROOT / "deploy" / "k8s"
NGINX_PATHS = (Path("/usr/sbin/nginx"),)
INSTALL_HINT = "run .ci/ensure-nginx to install Debian's nginx"
IMAGE = (EXAMPLES / "scene-3.jpg").read_bytes()
SETTINGS = {name: field.default for name, field in Settings.model_fields.items()}

# -- reading nginx configuration ---------------------------------------------------------------

# name, arguments, and the block's directives (None for a simple `name args;`)
Directive = tuple[str, list[str], "list[Directive] | None"]
_TOKEN = re.compile(r"""#[^\n]*|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[{};]|[^\s{};#"']+""")


def parse_nginx(text: str) -> list[Directive]:
    """nginx configuration text -> its directives, blocks nested; comments dropped."""
    root: list[Directive] = []
    stack, words = [root], []
    for token in _TOKEN.findall(text):
        if token.startswith("#"):
            continue
        if token == ";":
            assert words, "empty directive"
            stack[-1].append((words[0], words[1:], None))
        elif token == "{":
            assert words, "block without a name"
            children: list[Directive] = []
            stack[-1].append((words[0], words[1:], children))
            stack.append(children)
        elif token == "}":
            assert not words, "unbalanced }"
            assert len(stack) > 1, "unbalanced }"
            stack.pop()
            continue
        else:
            words.append(token)
            continue
        words = []
    assert not words, "unterminated directive or block"
    assert len(stack) == 1, "unterminated directive or block"
    return root


def dump_nginx(directives: list[Directive], indent: int = 0) -> str:
    pad = " " * indent
    lines = []
    for name, args, block in directives:
        head = pad + " ".join([name, *args])
        if block is None:
            lines.append(head + ";")
        else:
            lines += [head + " {", dump_nginx(block, indent + 4), pad + "}"]
    return "\n".join(line for line in lines if line)


def one(directives: list[Directive], name: str, *args: str) -> Directive:
    found = [d for d in directives if d[0] == name and (not args or tuple(d[1]) == args)]
    assert len(found) == 1, f"expected one `{name} {' '.join(args)}`, found {len(found)}"
    return found[0]


def block(directives: list[Directive], name: str, *args: str) -> list[Directive]:
    inner = one(directives, name, *args)[2]
    assert inner is not None, f"`{name}` is not a block"
    return inner


def setting(directives: list[Directive], name: str) -> list[str]:
    return one(directives, name)[1]


def site() -> list[Directive]:
    return parse_nginx(NGINX_CONF.read_text())


def nginx_bytes(size: str) -> int:
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", size)
    assert m, f"bad nginx size {size}"
    return int(m[1]) * 1024 ** " kmg".index(m[2].lower() or " ")


def nginx_seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", duration)
    assert m, f"bad nginx time {duration}"
    return int(m[1]) * {"ms": 1e-3, "s": 1, "m": 60, "h": 3600}[m[2] or "s"]


def render_nginx(prefix: Path, replica_ports: list[int], listen_port: int) -> Path:
    """deploy/nginx.conf on loopback, inside a main config that an unprivileged nginx can run.

    Only the addresses change: the first upstream `server` lines (all their parameters kept)
    point at ``replica_ports``, further ones are dropped, and `listen` moves to loopback.
    """
    directives = site()
    upstream = block(directives, "upstream", "captioner")
    servers = [d for d in upstream if d[0] == "server"]
    assert len(servers) >= len(replica_ports), "fewer upstream servers than replicas"
    loopback = [
        ("server", [f"127.0.0.1:{port}", *args[1:]], None)
        for (_, args, _), port in zip(servers, replica_ports, strict=False)
    ]
    upstream[:] = loopback + [d for d in upstream if d[0] != "server"]
    server = block(directives, "server")
    server[server.index(one(server, "listen"))] = ("listen", [f"127.0.0.1:{listen_port}"], None)
    http: list[Directive] = [("access_log", [str(prefix / "access.log")], None)]
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):  # defaults need root
        http.append((f"{kind}_temp_path", [str(prefix / kind)], None))
    main: list[Directive] = [
        ("worker_processes", ["1"], None),
        ("pid", [str(prefix / "nginx.pid")], None),
        ("error_log", [str(prefix / "error.log"), "info"], None),
        ("events", [], [("worker_connections", ["256"], None)]),
        ("http", [], http + directives),
    ]
    if os.geteuid() == 0:  # else workers run as nobody and cannot use the temp folders
        main.insert(0, ("user", ["root"], None))
    conf = prefix / "nginx.conf"
    conf.write_text(dump_nginx(main) + "\n")
    return conf


# -- nginx on this machine (mirrors tests/browser.py) ------------------------------------------


def find_nginx() -> str | None:
    for path in NGINX_PATHS:
        if os.access(path, os.X_OK):
            return str(path)
    return shutil.which("nginx")


def require_nginx() -> str:
    """The nginx binary; skip the calling test without one, and in CI (``$CI`` set) fail."""
    nginx = find_nginx()
    if nginx is not None:
        return nginx
    reason = f"nginx not found; {INSTALL_HINT}"
    if os.environ.get("CI"):
        pytest.fail(f"replica test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def nginx_command(nginx: str, prefix: Path, conf: Path, *extra: str) -> list[str]:
    cmd = [nginx, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;", *extra]
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=30).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version)
    if found and tuple(map(int, found.groups())) >= (1, 19, 5):  # -e: no start-up log in /var
        cmd[1:1] = ["-e", str(prefix / "error.log")]
    return cmd


# -- the deploy files agree ---------------------------------------------------------------------


def image_port() -> int:
    _, stages = read_dockerfile()
    return served_port(exec_form(last(chain(stages, "cuda"), "CMD")))


def replica_services() -> dict[str, dict]:
    return {
        name: svc
        for name, svc in compose_services().items()
        if "replicas" in svc.get("profiles", []) and "build" in svc
    }


def test_nginx_balances_over_exactly_the_compose_replicas():
    upstream = block(site(), "upstream", "captioner")
    replicas = replica_services()
    assert len(replicas) >= 2
    servers = [args for name, args, _ in upstream if name == "server"]
    assert sorted(args[0] for args in servers) == [f"{n}:{image_port()}" for n in sorted(replicas)]
    for args in servers:
        params = dict(a.split("=", 1) for a in args[1:])
        assert int(params["max_fails"]) >= 1, args
        assert nginx_seconds(params["fail_timeout"]) > 0, args
    one(upstream, "least_conn")
    nginx = compose_services()["nginx"]
    assert nginx["profiles"] == ["replicas"]
    assert {n: d["condition"] for n, d in nginx["depends_on"].items()} == dict.fromkeys(
        replicas, "service_healthy"
    ), "nginx resolves the replicas' names at start: they must be up"
    (mount,) = nginx["volumes"]
    assert (ROOT / mount["source"]).resolve() == NGINX_CONF
    assert mount["target"] == "/etc/nginx/conf.d/default.conf"
    assert mount["read_only"]
    for name, svc in replicas.items():
        assert not svc.get("ports"), f"{name} must be reached through nginx only"


def test_nginx_listens_where_compose_publishes_and_health_checks():
    (listen,) = setting(block(site(), "server"), "listen")
    nginx = compose_services()["nginx"]
    (published,) = nginx["ports"]
    assert int(published.rsplit(":", 1)[-1]) == int(listen)
    assert f"127.0.0.1:{listen}/readyz" in " ".join(nginx["healthcheck"]["test"])
    read = nginx_seconds(setting(block(site(), "server"), "proxy_read_timeout")[0])
    assert compose_seconds(nginx["stop_grace_period"]) > read, "in-flight requests need the time"


def test_nginx_retries_a_stopping_replica_but_not_overload():
    retry = set(setting(block(site(), "server"), "proxy_next_upstream"))
    # POST needs non_idempotent; 429 and 504 retried would only add load where it hurts.
    assert {"error", "timeout", "http_502", "http_503", "non_idempotent"} <= retry
    assert not retry & {"http_429", "http_504", "off"}
    server = block(site(), "server")
    assert setting(server, "proxy_request_buffering") == ["on"], "a retry needs the body kept"
    assert int(setting(server, "proxy_next_upstream_tries")[0]) >= 2


def test_nginx_limits_match_the_service():
    server = block(site(), "server")
    replicas = replica_services().values()
    timeouts = [container_env(s)["CAPTIONER_REQUEST_TIMEOUT_S"] for s in replicas]
    deadline = max(SETTINGS["request_timeout_s"], *map(float, timeouts))
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        assert nginx_seconds(setting(server, name)[0]) > deadline, f"{name} cuts the service short"
    limits = {
        "/v1/caption": SETTINGS["max_image_bytes"],
        "/v1/activity": SETTINGS["max_video_bytes"],
    }
    for route, limit in limits.items():
        location = block(server, "location", "=", route)
        assert nginx_bytes(setting(location, "client_max_body_size")[0]) == limit, route
        assert setting(location, "proxy_pass") == ["http://captioner"]
    assert nginx_bytes(setting(server, "client_max_body_size")[0]) == 64 * 1024
    assert setting(block(server, "location", "/"), "proxy_pass") == ["http://captioner"]


def test_nginx_accepts_the_rendered_config(tmp_path: Path):
    nginx = require_nginx()
    conf = render_nginx(tmp_path, [free_port(), free_port()], free_port())
    cmd = nginx_command(nginx, tmp_path, conf, "-t")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{result.stderr}\n{conf.read_text()}"


# -- Kubernetes manifests ---------------------------------------------------------------------


def k8s_objects() -> dict[str, dict]:
    """kind -> the object, across deploy/k8s/*.yaml (one object of each kind)."""
    objects: dict[str, dict] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert doc["kind"] not in objects, f"two {doc['kind']} objects"
                objects[doc["kind"]] = doc
    return objects


def app_routes() -> set[str]:
    from service.app import create_app

    return {route.path for route in create_app(Settings()).routes}


def test_k8s_has_a_deployment_a_service_and_an_hpa_that_select_the_same_pods():
    objects = k8s_objects()
    assert set(objects) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    deployment, service, hpa = (
        objects[k] for k in ("Deployment", "Service", "HorizontalPodAutoscaler")
    )
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector
    assert selector.items() <= labels.items()
    assert service["spec"]["selector"] == selector
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": image_port()}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in (*ports, *ports.values())
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_k8s_pods_get_one_gpu_probes_on_real_routes_and_time_to_drain():
    spec = k8s_objects()["Deployment"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
    routes = app_routes()
    probes = {k: container[k]["httpGet"] for k in ("readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    for probe in probes.values():
        assert probe["path"] in routes
        assert probe["port"] in ("http", image_port())
    env = {e["name"]: e["value"] for e in container["env"]}
    unknown = {n for n in env if n.removeprefix("CAPTIONER_").lower() not in SETTINGS}
    assert not unknown, f"not service settings: {unknown}"
    assert env["CAPTIONER_DEVICE"] in ("cuda", "auto")
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    timeout = float(env.get("CAPTIONER_REQUEST_TIMEOUT_S", SETTINGS["request_timeout_s"]))
    drain = timeout + 5  # what `captioner serve` gives uvicorn's graceful shutdown
    assert spec["terminationGracePeriodSeconds"] > int(sleep[1]) + drain


def test_k8s_hpa_scales_on_the_caption_queue_depth_the_service_exports():
    from service.metrics import Metrics

    (metric,) = k8s_objects()["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    labels = metric["pods"]["metric"]["selector"]["matchLabels"]
    metrics = Metrics()
    metrics.observer("caption").on_enqueue(3)  # what the caption batcher reports
    samples = [s for f in metrics.registry.collect() for s in f.samples]
    assert any(s.name == name and labels.items() <= s.labels.items() for s in samples), (
        f"no {name}{labels} among the service's metrics"
    )
    assert float(metric["pods"]["target"]["averageValue"]) > 0
    assert name in (K8S / "hpa.yaml").read_text().split("seriesQuery")[1], "adapter rule"


# -- live: two replicas behind nginx ----------------------------------------------------------


@dataclass
class Replica:
    proc: subprocess.Popen
    base: str
    log: Path


@dataclass
class Stack:
    replicas: list[Replica]
    nginx: subprocess.Popen
    front: str
    prefix: Path

    def logs(self) -> str:
        parts = [f"--- {r.base}\n{r.log.read_text()[-3000:]}" for r in self.replicas]
        error_log = self.prefix / "error.log"
        if error_log.is_file():
            parts.append(f"--- nginx\n{error_log.read_text()[-3000:]}")
        return "\n".join(parts)


def _start_replica(log: Path) -> Replica:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTIONER_")}
    if "CAPTIONER_CACHE" in os.environ:
        env["CAPTIONER_CACHE"] = os.environ["CAPTIONER_CACHE"]
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "captioner", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--no-activity", "--device", "cpu", "--max-wait-ms", "2"]
    with log.open("wb") as out:  # a file: nobody reads a pipe while the server runs
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Replica(proc, f"http://127.0.0.1:{port}", log)


def _wait_ready(base: str, proc: subprocess.Popen, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout_s} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    nginx = require_nginx()
    prefix = tmp_path_factory.mktemp("nginx")
    replicas = [_start_replica(prefix / f"replica-{i}.log") for i in range(2)]
    front_port = free_port()
    conf = render_nginx(prefix, [int(r.base.rsplit(":", 1)[1]) for r in replicas], front_port)
    with (prefix / "nginx.out").open("wb") as out:
        proxy = subprocess.Popen(nginx_command(nginx, prefix, conf), stdout=out, stderr=out)
    running = Stack(replicas, proxy, f"http://127.0.0.1:{front_port}", prefix)
    try:
        for i, replica in enumerate(replicas):
            _wait_ready(replica.base, replica.proc, f"replica {i}")
        _wait_ready(running.front, proxy, "nginx", timeout_s=30)
    except (RuntimeError, TimeoutError) as exc:
        for proc in [proxy, *(r.proc for r in replicas)]:
            _stop(proc)
        pytest.fail(f"{exc}\n{running.logs()}", pytrace=False)
    try:
        yield running
    finally:
        for proc in [proxy, *(r.proc for r in replicas)]:
            _stop(proc)


def captions_served(base: str) -> float:
    """The replica's count of caption requests it answered with 200."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "captioner_requests_total" and sample.labels == {
                "route": "/v1/caption",
                "status": "200",
            }:
                return sample.value
    return 0.0


class CaptionStream:
    """``n`` caption uploads to ``url`` from ``threads`` threads; every outcome is kept."""

    def __init__(self, url: str, n: int, threads: int = 4, limit_s: float = 60.0) -> None:
        self.url, self.n, self.limit_s = url, n, limit_s
        self.outcomes: list[int | str] = []
        self._sent = 0
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + limit_s
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < self._deadline:
                with self._lock:
                    if self._sent >= self.n:
                        return
                    self._sent += 1
                files = {"file": ("scene.jpg", IMAGE, "image/jpeg")}
                try:
                    r = client.post(f"{self.url}/v1/caption", files=files)
                    outcome: int | str = r.status_code
                    if r.status_code != 200:
                        outcome = f"{r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as exc:
                    outcome = repr(exc)
                with self._lock:
                    self.outcomes.append(outcome)

    def done(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def join(self) -> list[int | str]:
        for thread in self._threads:  # the request timeout bounds the last one
            thread.join(timeout=max(0.0, self._deadline - time.monotonic()) + 35)
        assert not any(t.is_alive() for t in self._threads), "client threads hung"
        assert len(self.outcomes) == self.n, f"{len(self.outcomes)}/{self.n} in {self.limit_s} s"
        return self.outcomes


def _failures(outcomes: list[int | str]) -> list[int | str]:
    return [o for o in outcomes if o != 200]


@pytest.mark.slow
def test_requests_through_nginx_are_shared_by_both_replicas(stack: Stack):
    before = [captions_served(r.base) for r in stack.replicas]
    outcomes = CaptionStream(stack.front, n=40).join()
    assert not _failures(outcomes), f"{_failures(outcomes)}\n{stack.logs()}"
    served = [captions_served(r.base) - b for r, b in zip(stack.replicas, before, strict=True)]
    assert sum(served) == 40, f"each request answered once, by one replica: {served}"
    assert all(n > 0 for n in served), f"a replica got no work: {served}"


@pytest.mark.slow
def test_sigterm_on_one_replica_loses_no_request(stack: Stack):
    victim, survivor = stack.replicas
    stream = CaptionStream(stack.front, n=60)
    deadline = time.monotonic() + 30
    while stream.done() < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.proc.send_signal(signal.SIGTERM)  # mid-stream: it has requests in flight
    try:
        code = victim.proc.wait(timeout=45)
    except subprocess.TimeoutExpired:
        pytest.fail(f"replica still running 45 s after SIGTERM\n{stack.logs()}")
    outcomes = stream.join()
    assert not _failures(outcomes), f"requests lost: {_failures(outcomes)}\n{stack.logs()}"
    assert code == 0, f"stopped replica exited {code}\n{stack.logs()}"
    assert "Traceback" not in victim.log.read_text(), stack.logs()

    before = captions_served(survivor.base)
    after_stop = CaptionStream(stack.front, n=10, threads=2).join()
    assert not _failures(after_stop), f"{_failures(after_stop)}\n{stack.logs()}"
    assert captions_served(survivor.base) - before == 10, "the survivor answers everything now"
