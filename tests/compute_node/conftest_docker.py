"""Fixtures for the Docker executor's tests (loaded with ``pytest_plugins``).

A real engine is used: when none answers on ``/var/run/docker.sock`` the
session starts ``dockerd`` through ``scripts/dockerd.py`` and stops it at the
end. Test images are built locally from Debian's ``busybox-static`` by
``scripts/build_busybox_image.py`` (no registry is reachable).

The test executors tag their cached images in their own repository and meter
under their own parent cgroup, so the session can check it left nothing behind
and removes what it created without touching anyone else's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import docker
import docker.errors
import pytest

from compute_node.executors._docker import DockerExecutor

ROOT = Path(__file__).resolve().parents[2]
SESSION = uuid.uuid4().hex[:12]
TEST_REPOSITORY = "chainsched-test-artifact"
TEST_CGROUP_PARENT = f"/chainsched-test-{SESSION}"
# Job ids label the containers; a session-unique one lets the cleanup checks
# ignore containers of anything else sharing the engine.
TEST_JOB_ID = int(SESSION[:8], 16)


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True, slots=True)
class BusyboxImage:
    """The example busybox image built for this session.

    Attributes:
        tarball: The ``docker save`` tarball.
        image_id: Its image id (``sha256:`` of the config).
    """

    tarball: Path
    image_id: str


@dataclass(frozen=True, slots=True)
class DockerTestEnv:
    """Names this session's jobs use, and checks that they left nothing behind.

    Attributes:
        job_id: Job id for the session's requests (labels their containers).
        repository: Repository of the test executors' image cache tags.
        cgroup_parent: Parent cgroup of the test executors' runs.
    """

    job_id: int
    repository: str
    cgroup_parent: str

    def containers(self, client: docker.DockerClient) -> list[str]:
        """Ids of all containers (running or not) created by this session's jobs."""
        found = client.containers.list(all=True, filters={"label": f"chainsched.job_id={self.job_id}"})
        return [str(c.id) for c in found]

    def run_cgroups(self) -> list[Path]:
        """Per-run cgroups still present under the session's parent cgroup."""
        return [run for parent in _cgroup_dirs() for run in parent.glob("run-*")]


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[docker.DockerClient]:
    """A client of a running engine, started for the session when none answers."""
    dockerd = _load_script("dockerd")
    try:
        handle = dockerd.start()
    except RuntimeError as error:
        pytest.fail(f"no Docker engine: {error}", pytrace=False)
    client = docker.from_env()
    yield client
    client.close()
    if handle is not None:
        dockerd.stop(handle)


@pytest.fixture(scope="session")
def build_busybox_image() -> Callable[..., BusyboxImage]:
    """``build(output=..., script=...)``: a busybox image tarball whose default command is ``script``."""
    builder = _load_script("build_busybox_image")

    def build(*, output: Path, **options: object) -> BusyboxImage:
        return BusyboxImage(tarball=output, image_id=builder.build(output=output, **options))

    return build


@pytest.fixture(scope="session")
def busybox_image(
    tmp_path_factory: pytest.TempPathFactory, build_busybox_image: Callable[..., BusyboxImage]
) -> BusyboxImage:
    """The example busybox image (default command: the word-count job)."""
    return build_busybox_image(output=tmp_path_factory.mktemp("images") / "busybox.tar")


def _cgroup_dirs() -> list[Path]:
    root = Path("/sys/fs/cgroup")
    relative = TEST_CGROUP_PARENT.lstrip("/")
    return [*root.glob(f"*/{relative}"), *[p for p in [root / relative] if p.is_dir()]]


@pytest.fixture(scope="session")
def docker_executor(docker_engine: docker.DockerClient) -> Iterator[DockerExecutor]:
    """One started executor for the session, so its image cache stays warm."""
    executor = DockerExecutor(
        image_repository=TEST_REPOSITORY,
        cgroup_parent=TEST_CGROUP_PARENT,
        pids_limit=32,
    )
    executor.start()
    yield executor
    executor.close()
    for image in docker_engine.images.list(name=TEST_REPOSITORY):
        for tag in image.tags:
            if tag.startswith(f"{TEST_REPOSITORY}:"):
                with contextlib.suppress(docker.errors.APIError):
                    docker_engine.images.remove(tag)
    for path in _cgroup_dirs():
        with contextlib.suppress(OSError):
            path.rmdir()


@pytest.fixture(scope="session")
def docker_test_env() -> DockerTestEnv:
    """This session's job id, cache repository and parent cgroup."""
    return DockerTestEnv(job_id=TEST_JOB_ID, repository=TEST_REPOSITORY, cgroup_parent=TEST_CGROUP_PARENT)
