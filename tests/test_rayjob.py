"""deploy/k8s/ray/rayjob.yaml, checked without a cluster: the KubeRay RayJob's required fields
and types (ray.io/v1), an entrypoint our own command line accepts, resources that agree with
it, the volume its paths live on, and an image the Dockerfile builds with Ray in it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from captioner.cli import build_parser
from tests.test_deploy import chain, read_dockerfile

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
RAYJOB = ROOT / "deploy" / "k8s" / "ray" / "rayjob.yaml"


@pytest.fixture(scope="module")
def job() -> dict:
    (doc,) = list(yaml.safe_load_all(RAYJOB.read_text()))
    return doc


def _pods(job: dict) -> list[dict]:
    cluster = job["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [g["template"]["spec"] for g in groups]


def test_the_rayjob_has_the_crds_required_fields_and_types(job: dict) -> None:
    assert job["apiVersion"] == "ray.io/v1"
    assert job["kind"] == "RayJob"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"])
    spec = job["spec"]
    assert isinstance(spec["entrypoint"], str)
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode", "InteractiveMode")
    assert isinstance(spec["shutdownAfterJobFinishes"], bool)
    cluster = spec["rayClusterSpec"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        # rayStartParams is map[string]string in the CRD: a bare number is refused
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        assert group["template"]["spec"]["containers"]
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_the_entrypoint_is_a_command_we_accept_with_matching_resources(job: dict) -> None:
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[0] == "captioner"
    args = build_parser().parse_args(words[1:])
    assert args.command == "caption"
    assert args.engine == "ray"
    assert args.address is None  # inside a Ray job, Ray gives the driver its cluster
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpus = sum(
        g["replicas"]
        * g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
        for g in workers
    )
    assert args.num_gpus * args.concurrency <= gpus  # every model actor finds its GPU
    assert args.num_gpus > 0
    mounts = {
        m["mountPath"] for pod in _pods(job) for c in pod["containers"] for m in c["volumeMounts"]
    }
    for path in [*args.paths, args.out]:  # the driver and the workers see the same files
        assert any(path.startswith(m + "/") for m in mounts), path
    assert args.resume  # a rerun continues where a failed job stopped


def test_the_image_is_the_dockerfiles_ray_target_at_the_pinned_version(job: dict) -> None:
    _, stages = read_dockerfile()
    assert "ray" in stages
    steps = [arg for _, arg in chain(stages, "ray")]
    built = [arg for _, arg in chain(stages, "ray-build")]
    assert any("[ray]" in step for step in built), "the ray image installs the [ray] extra"
    assert any("ray-build" in step for step in steps)
    images = {c["image"] for pod in _pods(job) for c in pod["containers"]}
    assert images
    assert all(image.endswith(":ray") for image in images)
    pinned = re.search(r"^ray==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert pinned
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == pinned.group(1)
    for pod in _pods(job):
        assert pod["securityContext"]["runAsNonRoot"] is True
