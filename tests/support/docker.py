"""Docker helpers for tests/docker (and the compose test): the engine check, the list of images,
`docker(...)`, the base images tools/docker/prepare-engine chose, and `Resources`, which removes
every container, network and volume a test made (labelled, so that a net catches the rest)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import uuid
from pathlib import Path

from mesh.runner import compose

ROOT = Path(__file__).resolve().parents[2]
CALL_TIMEOUT = 120

# name -> Dockerfile: the control plane's and each service's of the topology, as docker-compose.yml
# and tools/docker/build-images build them (a test checks the script lists the same)
IMAGES = dict(compose.DOCKERFILES)


def engine_answers() -> str:
    """Empty when `docker info` answers, else why not."""
    try:
        result = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                                timeout=20)
    except FileNotFoundError:
        return "no docker CLI on PATH"
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 20 s"
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        return f"`docker info` failed: {lines[-1] if lines else result.returncode}"
    return ""


def docker(*args: str, timeout: float = CALL_TIMEOUT, check: bool = True) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {shlex.join(args)} exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result.stdout.strip()


def bases_env() -> dict[str, str]:
    """What tools/docker/prepare-engine wrote (empty: the public defaults)."""
    path = Path(os.environ.get("POLYMESH_DOCKER_ENV", ROOT / ".build" / "docker-bases.env"))
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


class Resources:
    """Containers, networks and volumes one test made; `remove()` takes them all away, by name and
    then by this object's label (polymesh.test=<id>), and `leftovers()` says what is still there."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:10]
        self.label = f"polymesh.test={self.id}"
        self.containers: list[str] = []
        self.networks: list[str] = []
        self.volumes: list[str] = []

    def network(self) -> str:
        name = f"polymesh-test-{self.id}-{len(self.networks)}"
        docker("network", "create", "--label", self.label, name)
        self.networks.append(name)
        return name

    def volume(self) -> str:
        name = docker("volume", "create", "--label", self.label)
        self.volumes.append(name)
        return name

    def run(self, name: str, image: str, *args: str, env: dict[str, str] | None = None, network: str = "") -> str:
        """`docker run -d` of IMAGE as NAME-<id>, with ARGS before the image; returns the name."""
        name = f"{name}-{self.id}"
        env_args = [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]
        self.containers.append(name)
        docker("run", "-d", "--name", name, "--label", self.label, *(["--network", network] if network else []),
               *env_args, *args, image)
        return name

    def shell(self, image: str, script: str, user: str | None = None) -> str:
        """A shell script in a throwaway container of IMAGE (entrypoint replaced); its stdout."""
        return docker("run", "--rm", "--label", self.label, *(["--user", user] if user else []),
                      "--entrypoint", "sh", image, "-c", script)

    def logs(self) -> str:
        return "\n".join(f"--- {c}\n{docker('logs', '--tail', '30', c, check=False)}" for c in self.containers)

    def health(self, container: str) -> dict:
        return json.loads(docker("inspect", "-f", "{{json .State.Health}}", container)) or {}

    def remove(self) -> None:
        for container in self.containers:
            docker("rm", "-f", "-v", container, check=False)
        for network in self.networks:
            docker("network", "rm", network, check=False)
        for volume in self.volumes:
            docker("volume", "rm", "-f", volume, check=False)
        for command, ids in (("rm -f -v", self._labelled("ps", "-aq")), ("network rm", self._labelled("network", "ls", "-q")),
                             ("volume rm -f", self._labelled("volume", "ls", "-q"))):
            if ids:
                docker(*command.split(), *ids, check=False)

    def leftovers(self) -> list[str]:
        return [f"{kind} {i}" for kind, ids in (("container", self._labelled("ps", "-aq")),
                                                 ("network", self._labelled("network", "ls", "-q")),
                                                 ("volume", self._labelled("volume", "ls", "-q"))) for i in ids]

    def _labelled(self, *lister: str) -> list[str]:
        return docker(*lister, "--filter", f"label={self.label}", check=False).split()
