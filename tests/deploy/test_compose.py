"""The production compose file, checked by reading it: no Docker engine runs on this machine.

Each test guards one way a deployment breaks before any runbook runs: a dependency on a service
that does not exist, an image that changes under us, a worker that cannot find its topology or a
credential it needs, or a secret committed to the repository.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from domain.topology import Topology, load_topology

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.temporal.yml"
EXAMPLE_TOPOLOGY = REPO_ROOT / "deploy" / "topology.example.toml"
CONFIG_MOUNT = "/etc/failover-runbooks/topology.toml"

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PWD|WEBHOOK|CREDENTIAL")
# `:?` rather than a bare `${VAR}`: compose then refuses to start without the secret instead of
# passing an empty string that fails later, inside a runbook, in the middle of a failover.
REQUIRED_INTERPOLATION = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}$")

Service = dict[str, Any]


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    found: dict[str, Service] = compose["services"]
    return found


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(EXAMPLE_TOPOLOGY)


def environment_of(service: Service) -> dict[str, str | None]:
    """Both compose spellings; a list entry without ``=`` passes the host's value through."""
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return {str(k): None if v is None else str(v) for k, v in env.items()}
    pairs = (str(entry).partition("=") for entry in env)
    return {key: value if sep else None for key, sep, value in pairs}


def dependencies_of(service: Service) -> list[str]:
    depends_on = service.get("depends_on") or []
    links = [str(link).split(":")[0] for link in service.get("links") or []]
    return [*depends_on, *links]


def image_tag(image: str) -> str | None:
    name = image.split("@")[0]
    last = name.rsplit("/", 1)[-1]  # a registry host may carry a port: registry:5000/img
    return last.split(":", 1)[1] if ":" in last else None


def dockerfile_base_images(dockerfile: Path) -> list[str]:
    """FROM images with ``ARG`` defaults substituted; build-stage names are not images."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    images = []
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].upper() == "ARG" and "=" in words[1]:
            key, _, default = words[1].partition("=")
            args[key] = default
        elif len(words) >= 2 and words[0].upper() == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), words[1])
            if image not in stages:
                images.append(image)
            if len(words) >= 4 and words[2].upper() == "AS":
                stages.add(words[3])
    return images


def env_var_names_in(config: object) -> set[str]:
    """Every value of a ``*_env`` field, wherever in the topology it sits."""
    if isinstance(config, dict):
        names = {v for k, v in config.items() if str(k).endswith("_env") and isinstance(v, str)}
        for value in config.values():
            names |= env_var_names_in(value)
        return names
    if isinstance(config, list):
        return set().union(*(env_var_names_in(item) for item in config))
    return set()


def bind_mounts(service: Service) -> dict[str, Path]:
    """Container path → host path for each bind mount, in short or long syntax."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts[volume["target"]] = (REPO_ROOT / volume["source"]).resolve()
            continue
        source, _, rest = str(volume).partition(":")
        if source.startswith((".", "/")):
            mounts[rest.split(":")[0]] = (REPO_ROOT / source).resolve()
    return mounts


def host_of(address: str) -> str:
    return urlsplit(address if "://" in address else f"//{address}").hostname or ""


def test_every_dependency_names_a_defined_service(services: dict[str, Service]) -> None:
    missing = {
        f"{name} -> {dependency}"
        for name, service in services.items()
        for dependency in dependencies_of(service)
        if dependency not in services
    }
    assert not missing, f"depends_on/links name undefined services: {sorted(missing)}"


def test_every_image_is_pinned_to_a_version(services: dict[str, Service]) -> None:
    images = [service["image"] for service in services.values() if "image" in service]
    images += dockerfile_base_images(REPO_ROOT / "deploy" / "Dockerfile")
    unpinned = [
        image
        for image in images
        if (tag := image_tag(image)) is None or tag == "latest" or not re.search(r"\d", tag)
    ]
    assert images
    assert not unpinned, f"images without an explicit version tag: {unpinned}"


def test_worker_is_built_from_the_project_with_an_existing_dockerfile(
    services: dict[str, Service],
) -> None:
    build = services["worker"]["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = (REPO_ROOT / build["context"]).resolve()
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    assert context == REPO_ROOT, "the worker image must be built from the project root"
    assert dockerfile.is_file(), f"{dockerfile} does not exist"
    assert 'ENTRYPOINT ["python", "-m", "workers"]' in dockerfile.read_text(encoding="utf-8")


def test_worker_reads_the_example_topology_from_the_mounted_path(
    services: dict[str, Service],
) -> None:
    worker = services["worker"]
    assert environment_of(worker).get("DRCTL_CONFIG") == CONFIG_MOUNT
    assert bind_mounts(worker).get(CONFIG_MOUNT) == EXAMPLE_TOPOLOGY.resolve()


def test_worker_environment_provides_every_credential_the_topology_names(
    services: dict[str, Service], topology: Topology
) -> None:
    named = env_var_names_in(topology.model_dump())
    assert {venue.api_key_env for venue in topology.venues} <= named  # the walk finds them
    missing = named - environment_of(services["worker"]).keys()
    assert not missing, f"the worker's environment lacks {sorted(missing)}"


def test_no_environment_value_is_a_literal_secret(
    services: dict[str, Service], topology: Topology
) -> None:
    credential_names = env_var_names_in(topology.model_dump())
    literal = {
        f"{name}.{key}"
        for name, service in services.items()
        for key, value in environment_of(service).items()
        if (SECRET_NAME.search(key) or key in credential_names)
        and not REQUIRED_INTERPOLATION.match(value or "")
    }
    assert not literal, f"secrets must be ${{VAR:?message}} interpolations: {sorted(literal)}"


def test_example_topology_loads_and_points_at_compose_services(
    services: dict[str, Service], topology: Topology
) -> None:
    in_compose = {
        "temporal.address": host_of(topology.temporal.address),
        "lease.url": host_of(topology.lease.url),
        "replication.nats_url": host_of(topology.replication.nats_url),
    }
    assert {field: host for field, host in in_compose.items() if host not in services} == {}
    temporal_env = environment_of(services["temporal"])
    assert temporal_env.get("DEFAULT_NAMESPACE") == topology.temporal.namespace
