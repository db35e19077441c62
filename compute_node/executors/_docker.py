"""Run job replicas in Docker containers: content-addressed images, no network, cgroup metering.

The program is a ``docker save`` tarball fetched by CID. Before anything runs,
the tarball is read member by member: the image config must hash to the digest
its name records (that digest is the image id), and every layer must hash to
the ``diff_id`` the config lists. Only those verified members are repacked and
given to ``docker load``, without tags, so what the engine loads is exactly what
was hashed and a job cannot retag the provider's own images. The loaded image id
must equal the verified digest. The image is then tagged
``chainsched-artifact:<sha256 of the CID>`` and cached by CID, in memory and
through that tag across restarts.

Sandbox (``docker run`` equivalents):
    ``--network none`` (unless the request allows network: ``network_mode``),
    ``--read-only`` root filesystem with a small ``/tmp`` tmpfs, inputs bound
    read-only at ``/inputs``, the outputs directory bound at ``/outputs``,
    ``--memory`` = ``--memory-swap`` = the request's memory limit,
    ``--cpus``, ``--pids-limit``, ``--cap-drop ALL``,
    ``--security-opt no-new-privileges``, no core dumps, no health check, and a
    fixed hostname so replicas see the same environment. The container runs as
    the node's own uid:gid, or as ``nobody`` (65534:65534) when the node is
    root; the outputs directory is handed to that user. ``user=""`` keeps the
    image's own ``USER``. The job's seed and id are passed as
    ``CHAINSCHED_SEED`` (hex) and ``CHAINSCHED_JOB_ID``. Arguments from the
    request replace the image's command (its entrypoint is kept); with no
    arguments the image's defaults run.

Limits: the container is killed at the request's timeout, as soon as its CPU
time exceeds ``max_units`` milliseconds (checked every ``poll_interval``), and,
for a request with ``max_output_bytes``, as soon as ``/outputs`` and its stdout
and stderr together hold more (checked as often as the headroom left requires,
down to every ``output_poll_interval``). A run that ends with more than that is
over the limit too. The container is removed in every case, including errors
and KeyboardInterrupt. ``ExecutionResult.stopped_by`` says which limit ended
the run: TIMEOUT, FUEL (the CPU budget, ``max_units`` being the job's units),
MEMORY (the kernel's OOM killer) or OUTPUT. stdout and stderr never pass the
output limit (their copy stops at it); files the program writes itself can pass
it by what it writes in one check interval plus the kill's delay (0.5 to 3 MB
at the 300 MB/s a container writes through a bind mount here).

Metering: ``container.stats()`` is empty once a container has exited, and the
engine deletes a container's cgroup when its process exits, so its counters
cannot be read afterwards. Each run therefore gets its own parent cgroup
(``--cgroup-parent /chainsched/run-<uuid>``, cgroupfs driver): the kernel keeps
charging a parent for its children, and the parent stays after the container's
own cgroup is gone, so the exact totals are read after exit: CPU time from
``cpuacct.usage`` (cgroup v1) or ``cpu.stat usage_usec`` (v2), peak memory from
``memory.max_usage_in_bytes`` (v1) or ``memory.peak`` (v2, kernel 5.19+;
both include page cache). The parent is removed afterwards. This needs the
engine's cgroupfs driver and write access to ``/sys/fs/cgroup`` on the same
host (a root node next to its engine). Otherwise (systemd driver, remote engine)
the executor falls back to sampling the stats API about once a second while the
container runs, which undercounts the last second. Wall time is the engine's
StartedAt to FinishedAt. ``usage`` = CPU milliseconds rounded up, at least 1;
it includes the container's own start-up (``runc init``, about 25-40 ms here),
so replicas of a nondestructive job agree on it only roughly (the contract takes
the median).

The engine must see the node's filesystem (inputs and outputs are bind mounts),
so it runs on the same host.

stdout and stderr are read from the attach stream while the program writes them
(the engine keeps no log: log driver ``none``), into files outside the outputs
directory, and written to ``stdout`` and ``stderr`` there after the container
exits (an entry the program left under those names is replaced, never
followed). Outputs may hold anything the program wrote, symlinks included:
readers must not follow links out of the directory.

Job failures (a tarball that does not verify, a command that cannot start,
timeout, out of memory, CPU budget exceeded, too much output) come back as
``ExecutionResult.error``; exceptions are for the node's own problems:

    DockerExecutorError                 root of this module's exceptions
    ├── DockerEngineUnavailableError    the engine did not answer: retry later
    └── DockerArtifactRejectedError     the tarball is not a valid image for its digest
                                        (raised by ``load_image``; ``run`` reports it)

Example:
    >>> executor = DockerExecutor()
    >>> executor.start()                      # connects; raises DockerEngineUnavailableError
    >>> result = executor.run(request)        # request: ExecutionRequest
    >>> result.usage, result.exit_code, result.error
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import tarfile
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from stat import S_ISREG
from typing import IO, Any, Literal

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from docker.types import LogConfig, Ulimit
from docker.utils.socket import STDOUT, frames_iter

from compute_node.executors._base import ExecutionRequest, ExecutionResult, StopReason

__all__ = [
    "DockerArtifactRejectedError",
    "DockerEngineUnavailableError",
    "DockerExecutor",
    "DockerExecutorError",
]

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
NOBODY = "65534:65534"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_JSON_MEMBER = 16 * MiB
_COPY_CHUNK = MiB
_ENGINE_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
# The fastest a container is assumed to fill /outputs (about 300 MB/s measured
# here through a bind mount): the size is checked before the job could pass its
# limit at this rate, and every output_poll_interval once it is that close.
_FASTEST_WRITES = 4 << 30

MeterMode = Literal["auto", "cgroup", "stats"]


class DockerExecutorError(Exception):
    """Root of the Docker executor's exceptions."""


class DockerEngineUnavailableError(DockerExecutorError):
    """The Docker engine did not answer. Nothing about the job is known; retry later."""


class DockerArtifactRejectedError(DockerExecutorError):
    """A ``docker save`` tarball is malformed or its content does not match its digest.

    Attributes:
        digest: The image id the tarball claims (``sha256:...``), or "" if unknown.
    """

    def __init__(self, message: str, *, digest: str = "") -> None:
        super().__init__(message)
        self.digest = digest


# --------------------------------------------------------------------------- images


class _DiffIdReader:
    """File-like reader that hashes a layer's uncompressed bytes while it is copied."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source
        self._sha = hashlib.sha256()
        self._inflate: Any = None
        self._started = False

    def read(self, size: int = -1) -> bytes:
        chunk = self._source.read(size)
        if not self._started:
            self._started = True
            if chunk[:2] == b"\x1f\x8b":  # gzip layer: the diff id covers the tar inside
                self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        if self._inflate is None:
            self._sha.update(chunk)
        elif chunk:
            self._sha.update(self._inflate.decompress(chunk))
        return chunk

    def hexdigest(self) -> str:
        if self._inflate is not None:
            self._sha.update(self._inflate.flush())
        return self._sha.hexdigest()


def _member(archive: tarfile.TarFile, name: str) -> tarfile.TarInfo:
    try:
        info = archive.getmember(name)
    except KeyError:
        raise DockerArtifactRejectedError(f"the tarball has no {name!r}") from None
    if not info.isfile():
        raise DockerArtifactRejectedError(f"{name!r} in the tarball is not a regular file")
    return info


def _read_small(archive: tarfile.TarFile, name: str) -> bytes:
    info = _member(archive, name)
    if info.size > _MAX_JSON_MEMBER:
        raise DockerArtifactRejectedError(f"{name!r} is {info.size} bytes, more than a config can be")
    source = archive.extractfile(info)
    assert source is not None  # a regular file always has content
    return source.read()


def _open_archive(tarball: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(tarball, mode="r:*")
    except (tarfile.TarError, OSError) as error:
        raise DockerArtifactRejectedError(f"not a docker save tarball: {error}") from None


def repack_verified(tarball: Path, target: IO[bytes]) -> str:
    """Verify a ``docker save`` tarball and write its verified image to ``target``.

    Checks that the tarball holds exactly one image, that its config hashes to
    the digest its name records, and that each layer hashes to the config's
    ``diff_id`` (gzip layers are hashed uncompressed). Writes a new tarball with
    only those members and no tags.

    Args:
        tarball: The ``docker save`` output (plain or compressed tar).
        target: Binary stream receiving the repacked tarball.

    Returns:
        The image id, ``sha256:<config digest>``.

    Raises:
        DockerArtifactRejectedError: The tarball is malformed or altered.
    """
    with _open_archive(tarball) as archive:
        try:
            manifest = json.loads(_read_small(archive, "manifest.json"))
        except (ValueError, tarfile.TarError) as error:
            raise DockerArtifactRejectedError(f"manifest.json is not valid JSON: {error}") from None
        if not (isinstance(manifest, list) and len(manifest) == 1):
            raise DockerArtifactRejectedError("manifest.json must describe exactly one image")
        entry = manifest[0]
        config_name = entry.get("Config") if isinstance(entry, dict) else None
        layer_names = entry.get("Layers") if isinstance(entry, dict) else None
        if not isinstance(config_name, str) or not isinstance(layer_names, list):
            raise DockerArtifactRejectedError("manifest.json lacks Config or Layers")
        claimed = Path(config_name).name.removesuffix(".json")
        if not _HEX64.fullmatch(claimed):
            raise DockerArtifactRejectedError(f"config name {config_name!r} does not record a sha256")
        digest = f"sha256:{claimed}"
        config_bytes = _read_small(archive, config_name)
        actual = hashlib.sha256(config_bytes).hexdigest()
        if actual != claimed:
            raise DockerArtifactRejectedError(
                f"image config hashes to sha256:{actual}, not {digest} as the tarball "
                "records: the tarball was altered; fetch the image again by its CID",
                digest=digest,
            )
        try:
            diff_ids = json.loads(config_bytes)["rootfs"]["diff_ids"]
        except (ValueError, KeyError, TypeError):
            raise DockerArtifactRejectedError("image config has no rootfs.diff_ids", digest=digest) from None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layer_names):
            raise DockerArtifactRejectedError(
                f"manifest lists {len(layer_names)} layers, config {len(diff_ids)}", digest=digest
            )
        with tarfile.open(fileobj=target, mode="w|", format=tarfile.PAX_FORMAT) as out:
            info = tarfile.TarInfo(f"{claimed}.json")
            info.size = len(config_bytes)
            out.addfile(info, _BytesReader(config_bytes))
            new_layers = []
            for index, (name, diff_id) in enumerate(zip(layer_names, diff_ids, strict=True)):
                if not isinstance(name, str):
                    raise DockerArtifactRejectedError("manifest layer names must be strings", digest=digest)
                source_info = _member(archive, name)
                source = archive.extractfile(source_info)
                assert source is not None
                reader = _DiffIdReader(source)
                info = tarfile.TarInfo(f"layers/{index}.tar")
                info.size = source_info.size
                out.addfile(info, reader)
                layer_digest = f"sha256:{reader.hexdigest()}"
                if layer_digest != diff_id:
                    raise DockerArtifactRejectedError(
                        f"layer {index} ({name}) hashes to {layer_digest}, not "
                        f"{diff_id} as the image config records: the tarball was altered",
                        digest=digest,
                    )
                new_layers.append(info.name)
            manifest_bytes = json.dumps(
                [{"Config": f"{claimed}.json", "RepoTags": None, "Layers": new_layers}]
            ).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(manifest_bytes)
            out.addfile(info, _BytesReader(manifest_bytes))
    return digest


class _BytesReader:
    """Minimal reader over bytes for ``TarFile.addfile`` in stream mode."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._offset + size
        chunk = bytes(self._data[self._offset : end])
        self._offset += len(chunk)
        return chunk


# --------------------------------------------------------------------------- metering


@dataclass(frozen=True, slots=True)
class _CgroupRun:
    """A run's own parent cgroup (cgroupfs driver) whose counters outlive the container.

    Attributes:
        root: Mount point of the cgroup hierarchies (``/sys/fs/cgroup``).
        version: 1 (one hierarchy per controller) or 2 (unified).
        relative: The parent path given to ``--cgroup-parent``, e.g. ``/chainsched/run-ab12``.
    """

    root: Path
    version: int
    relative: str

    def _dir(self, controller: str) -> Path:
        base = self.root / controller if self.version == 1 else self.root
        return base / self.relative.lstrip("/")

    def exists(self) -> bool:
        return self._dir("cpuacct").is_dir()

    def cpu_ns(self) -> int | None:
        try:
            if self.version == 1:
                return int((self._dir("cpuacct") / "cpuacct.usage").read_text())
            for line in (self._dir("") / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) * 1000
        except (OSError, ValueError):
            return None
        return None

    def peak_memory(self) -> int | None:
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        try:
            return int((self._dir("memory") / name).read_text())
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        """Remove the parent cgroup in every hierarchy (retrying while the engine lets go)."""
        if self.version == 1:
            dirs = {(entry / self.relative.lstrip("/")) for entry in self.root.iterdir()}
        else:
            dirs = {self._dir("")}
        for path in dirs:
            for attempt in range(20):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as error:
                    if attempt == 19:
                        logger.warning("could not remove cgroup %s: %s", path, error)
                    time.sleep(0.05)


class _StatsSampler:
    """Fallback meter: samples the stats API (about once a second) while a container runs."""

    def __init__(self, client: docker.DockerClient, container_id: str) -> None:
        self._client = client
        self._container_id = container_id
        self._cpu_ns: int | None = None
        self._peak: int | None = None
        self._thread = threading.Thread(target=self._loop, name="docker-stats", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        try:
            for sample in self._client.api.stats(self._container_id, stream=True, decode=True):
                cpu = sample.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage")
                if isinstance(cpu, int) and cpu > (self._cpu_ns or 0):
                    self._cpu_ns = cpu
                memory = sample.get("memory_stats", {})
                peak = memory.get("max_usage") or memory.get("usage")
                if isinstance(peak, int) and peak > (self._peak or 0):
                    self._peak = peak
        except Exception as error:  # noqa: BLE001 - a lost sample must not fail the job
            logger.debug("stats stream for %s ended: %s", self._container_id, error)

    def finish(self, timeout: float = 0.2) -> None:
        """Give the stream a moment for a last sample; its thread ends when the container goes."""
        self._thread.join(timeout)

    def cpu_ns(self) -> int | None:
        return self._cpu_ns

    def peak_memory(self) -> int | None:
        return self._peak


class _LogCapture:
    """Copies a container's stdout and stderr, as the program writes them, into private files.

    The container logs to no driver (``none``): the attach stream, opened before
    the container starts, is the only copy, and the program's writes block while
    it is not read. So stdout and stderr put on disk only what this writes:
    with a ``limit`` it writes at most ``limit`` bytes less what the supervisor
    last measured under ``/outputs`` (``files_bytes``), then sets ``over``, wakes
    the supervisor and drains the rest. The files sit outside ``/outputs``
    (where the program could replace them) until ``install`` copies them in.
    """

    def __init__(self, sock: Any, directory: Path, *, limit: int | None, wake: threading.Event) -> None:
        self._sock = sock
        self._directory = directory
        self._limit = limit
        self._wake = wake
        self.bytes = 0
        self.files_bytes = 0
        self.over = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for name in ("stdout", "stderr"):  # there for install() even if the stream breaks at once
            (self._directory / name).touch()
        self._thread = threading.Thread(target=self._copy, name="docker-logs", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        try:
            with open(self._directory / "stdout", "wb") as stdout, open(self._directory / "stderr", "wb") as stderr:
                for stream, data in frames_iter(self._sock, tty=False):  # type: ignore[no-untyped-call]
                    if self.over:
                        continue
                    if self._limit is not None:
                        room = self._limit - self.files_bytes - self.bytes
                        if len(data) > room:
                            data = data[: max(room, 0)]
                            self.over = True
                    (stdout if stream == STDOUT else stderr).write(data)
                    self.bytes += len(data)
                    if self.over:
                        self._wake.set()
        except Exception as error:  # noqa: BLE001 - a broken stream ends the copy, not the run
            logger.warning("the container's output stream broke off: %s", error)

    def finish(self, timeout: float) -> None:
        """Wait for the stream to end (the container has exited), then close it."""
        if self._thread is not None:
            self._thread.join(timeout)
        self.close()
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        """Close the stream, waking a reader still blocked on it."""
        with contextlib.suppress(OSError, ValueError), socket.socket(fileno=os.dup(self._sock.fileno())) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._sock.close()

    def install(self, outputs_dir: Path) -> None:
        """Write the captured ``stdout`` and ``stderr`` into ``outputs_dir``."""
        for name in ("stdout", "stderr"):
            with open(self._directory / name, "rb") as captured:
                _replace_with_file(outputs_dir / name, iter(functools.partial(captured.read, _COPY_CHUNK), b""))


@dataclass(slots=True)
class _OutputWatch:
    """Measures ``/outputs`` (and the captured stdout and stderr) against ``max_output_bytes``."""

    root: Path
    limit: int
    capture: _LogCapture
    next_walk: float = 0.0

    def exceeded(self, now: float) -> bool:
        if self.capture.over:
            return True
        if now < self.next_walk:
            return False
        self.capture.files_bytes = _tree_size(self.root)
        # Walking thousands of files takes a while: space the walks so that
        # they never take more than about a tenth of the run.
        self.next_walk = now + 9 * (time.monotonic() - now)
        return self.capture.files_bytes + self.capture.bytes > self.limit

    def seconds_to_next_check(self, now: float) -> float:
        """How long the job can write at ``_FASTEST_WRITES`` before it could pass the limit."""
        headroom = self.limit - self.capture.files_bytes - self.capture.bytes
        return max(self.next_walk - now, headroom / _FASTEST_WRITES)


# --------------------------------------------------------------------------- helpers


def _tree_size(root: Path) -> int:
    """Total bytes of the regular files under ``root``, never following symlinks."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                stat = os.lstat(os.path.join(directory, name))
                if S_ISREG(stat.st_mode):
                    total += stat.st_size
    return total


def _output_reason(request: ExecutionRequest) -> str:
    return f"wrote more than max_output_bytes={request.max_output_bytes} under /outputs (stdout and stderr included)"


def _parse_engine_time(value: object) -> float | None:
    """Seconds since the epoch from the engine's RFC 3339 time (nanosecond precision)."""
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value)
    if match is None or match[1].startswith("0001"):
        return None
    zone = "+00:00" if match[3] == "Z" else match[3]
    whole = datetime.fromisoformat(match[1] + zone).timestamp()
    return whole + int((match[2] or "0")[:9].ljust(9, "0")) / 1e9


def _replace_with_file(path: Path, chunks: Iterator[bytes]) -> None:
    """Write ``chunks`` to a fresh file at ``path``, replacing (never following) what is there."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        for chunk in chunks:
            out.write(chunk)


def _numeric_user(user: str) -> tuple[int, int] | None:
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        return None
    return int(uid), int(gid) if gid else int(uid)


@dataclass(frozen=True, slots=True)
class _Outcome:
    exit_code: int
    error: str | None
    cpu_ns: int | None
    peak_memory: int | None
    wall_ms: int
    stopped_by: StopReason | None = None


# --------------------------------------------------------------------------- executor


class DockerExecutor:
    """Runs job replicas in locked-down Docker containers (see the module docstring).

    Args:
        base_url: Engine address (``unix:///var/run/docker.sock``); None reads
            ``DOCKER_HOST`` and defaults like the docker CLI.
        cpus: CPU limit of a container (``--cpus``).
        pids_limit: Most processes and threads a container may have.
        user: ``uid:gid`` to run as; None picks the node's own ids, or
            ``nobody`` when the node is root; "" keeps the image's ``USER``.
        network_mode: Network for requests that allow it (destructive jobs);
            the engine here runs without a bridge, so such jobs need e.g.
            ``"host"`` or a user-defined network. Otherwise ``none``.
        tmpfs_size: Bytes of the writable ``/tmp`` (charged to the memory limit).
        meter: "cgroup" (exact, see the module docstring), "stats" (sampled),
            or "auto" (cgroup when possible, else stats).
        cgroup_parent: Parent cgroup under which each run gets its own child.
        cgroup_root: Where the cgroup hierarchies are mounted.
        poll_interval: Seconds between checks of the timeout and CPU budget.
        output_poll_interval: For a job with ``max_output_bytes``, the shortest
            time between two checks of the size of ``/outputs`` (a walk of the
            directory); they come that often once the job could reach its limit.
        api_timeout: Seconds to wait for one engine API call.
        work_dir: Directory for temporary repacked images (default: the system's).
        image_repository: Repository name of the per-CID cache tags.

    Example:
        >>> executor = DockerExecutor(cpus=1.0, pids_limit=64)
        >>> executor.start()
        >>> result = executor.run(request)
    """

    kind: str = "docker"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        cpus: float = 1.0,
        pids_limit: int = 64,
        user: str | None = None,
        network_mode: str = "bridge",
        tmpfs_size: int = 64 * MiB,
        meter: MeterMode = "auto",
        cgroup_parent: str = "/chainsched",
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        poll_interval: float = 0.1,
        output_poll_interval: float = 0.005,
        api_timeout: float = 60.0,
        work_dir: Path | None = None,
        image_repository: str = "chainsched-artifact",
    ) -> None:
        self._base_url = base_url
        self._cpus = cpus
        self._pids_limit = pids_limit
        self._user = user
        self._network_mode = network_mode
        self._tmpfs_size = tmpfs_size
        self._meter: MeterMode = meter
        self._cgroup_parent = "/" + cgroup_parent.strip("/")
        self._cgroup_root = cgroup_root
        self._cgroup_version = 0
        self._poll_interval = poll_interval
        self._output_poll_interval = output_poll_interval
        self._api_timeout = api_timeout
        self._work_dir = work_dir
        self._image_repository = image_repository
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._cid_locks: dict[str, threading.Lock] = {}
        self._images: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect to the engine and choose the meter.

        Raises:
            DockerEngineUnavailableError: The engine did not answer.
            DockerExecutorError: ``meter="cgroup"`` was asked for and is not possible.
        """
        with self._lock:
            if self._client is not None:
                return
            try:
                client = (
                    docker.DockerClient(base_url=self._base_url, timeout=int(self._api_timeout))
                    if self._base_url
                    else docker.from_env(timeout=int(self._api_timeout))
                )
                info = client.info()
            except (docker.errors.DockerException, *_ENGINE_ERRORS) as error:
                raise DockerEngineUnavailableError(
                    f"Docker engine at {self._base_url or 'DOCKER_HOST/default socket'} did not "
                    f"answer ({error}). Start it (systemctl start docker, or in a checkout: "
                    "python scripts/dockerd.py start) and retry."
                ) from None
            try:
                self._choose_meter(info)
            except DockerExecutorError:
                client.close()
                raise
            self._client = client
        logger.info(
            "docker engine %s ready: cgroup v%s driver %s, meter %s",
            info.get("ServerVersion"),
            info.get("CgroupVersion", "1"),
            info.get("CgroupDriver"),
            self._meter,
        )

    def close(self) -> None:
        """Close the engine connection (cached images stay loaded and tagged)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _choose_meter(self, info: Mapping[str, Any]) -> None:
        version = int(str(info.get("CgroupVersion") or "1"))
        accounting = self._cgroup_root / ("cpuacct" if version == 1 else "")
        usable = info.get("CgroupDriver") == "cgroupfs" and accounting.is_dir() and os.access(accounting, os.W_OK)
        if self._meter == "cgroup" and not usable:
            raise DockerExecutorError(
                f"meter='cgroup' needs the engine's cgroupfs driver and write access to "
                f"{accounting} (engine driver: {info.get('CgroupDriver')}). Use meter='auto'."
            )
        if self._meter == "auto":
            self._meter = "cgroup" if usable else "stats"
        self._cgroup_version = version
        if self._meter == "cgroup":
            self._remove_stale_cgroups()

    def _remove_stale_cgroups(self) -> None:
        """Remove empty per-run cgroups left by a crashed node (busy ones stay)."""
        bases = (
            [entry for entry in self._cgroup_root.iterdir() if entry.is_dir()]
            if self._cgroup_version == 1
            else [self._cgroup_root]
        )
        for base in bases:
            parent = base / self._cgroup_parent.lstrip("/")
            with contextlib.suppress(OSError):
                for stale in parent.glob("run-*"):
                    with contextlib.suppress(OSError):
                        stale.rmdir()

    def _connected(self) -> docker.DockerClient:
        if self._client is None:
            self.start()
        assert self._client is not None
        return self._client

    # ------------------------------------------------------------------ images

    def _cache_tag(self, artifact_cid: str) -> str:
        return hashlib.sha256(artifact_cid.encode()).hexdigest()

    def load_image(self, *, artifact: Path, artifact_cid: str) -> str:
        """Return the id of the verified image for ``artifact_cid``, loading it if needed.

        Args:
            artifact: The ``docker save`` tarball fetched by ``artifact_cid``.
            artifact_cid: Cache key.

        Returns:
            The image id (``sha256:...``).

        Raises:
            DockerArtifactRejectedError: The tarball does not verify (nothing was loaded).
            DockerEngineUnavailableError: The engine did not answer.
        """
        client = self._connected()
        with self._lock:
            cid_lock = self._cid_locks.setdefault(artifact_cid, threading.Lock())
        with cid_lock:
            cached = self._images.get(artifact_cid)
            if cached is not None:
                return cached
            tag = self._cache_tag(artifact_cid)
            try:
                image_id = str(client.images.get(f"{self._image_repository}:{tag}").id)
                logger.debug("image for %s found by tag: %s", artifact_cid, image_id)
            except docker.errors.ImageNotFound:
                image_id = self._load_verified(client, artifact)
                client.api.tag(image_id, self._image_repository, tag)
                logger.info("loaded image %s for artifact %s", image_id, artifact_cid)
            except _ENGINE_ERRORS as error:
                raise self._unavailable(error) from None
            self._images[artifact_cid] = image_id
            return image_id

    def _load_verified(self, client: docker.DockerClient, artifact: Path) -> str:
        with tempfile.TemporaryFile(dir=self._work_dir) as repacked:
            expected = repack_verified(artifact, repacked)
            repacked.seek(0)
            loaded: list[str] = []
            try:
                for message in client.api.load_image(repacked):  # type: ignore[no-untyped-call]
                    if "errorDetail" in message:
                        detail = message["errorDetail"].get("message")
                        raise DockerArtifactRejectedError(
                            f"the engine refused the image: {detail}",
                            digest=expected,
                        )
                    found = re.search(r"Loaded image ID: (\S+)", str(message.get("stream", "")))
                    if found:
                        loaded.append(found[1])
            except docker.errors.APIError as error:
                raise DockerArtifactRejectedError(
                    f"the engine refused the image: {error.explanation}", digest=expected
                ) from None
            except _ENGINE_ERRORS as error:
                raise self._unavailable(error) from None
        if loaded != [expected]:
            for image_id in loaded:
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(image_id, force=True)
            raise DockerArtifactRejectedError(
                f"the engine loaded {loaded or 'nothing'}, expected {expected}", digest=expected
            )
        return expected

    def _forget_image(self, artifact_cid: str) -> None:
        self._images.pop(artifact_cid, None)

    def _unavailable(self, error: BaseException) -> DockerEngineUnavailableError:
        return DockerEngineUnavailableError(
            f"Docker engine stopped answering ({error}). Check that it runs (docker info) and retry the job."
        )

    # ------------------------------------------------------------------ run

    def _container_user(self) -> str:
        if self._user is not None:
            return self._user
        euid = os.geteuid()
        return NOBODY if euid == 0 else f"{euid}:{os.getegid()}"

    def _prepare_outputs(self, outputs_dir: Path, user: str) -> None:
        outputs_dir.mkdir(parents=True, exist_ok=True)
        ids = _numeric_user(user) if user else None
        if ids is not None and ids[0] == os.geteuid():
            return
        if ids is not None and os.geteuid() == 0:
            os.chown(outputs_dir, *ids)
        else:  # unknown or foreign user and no right to chown: let anyone write
            outputs_dir.chmod(0o777)

    def run(self, request: ExecutionRequest) -> ExecutionResult:
        """Run one replica in a container and report its usage.

        Args:
            request: What to run; ``max_units`` is the CPU budget in milliseconds.

        Returns:
            The result; ``error`` names the reason when the sandbox failed the run.

        Raises:
            DockerEngineUnavailableError: The engine did not answer; the job did not run
                (or its outcome is unknown) and may be retried.
            ValueError: The request's limits are not positive or its inputs directory
                does not exist.
        """
        if request.max_units < 1 or request.timeout <= 0 or request.memory_limit < 1:
            raise ValueError(f"job {request.job_id}: max_units, timeout and memory_limit must be positive")
        if not request.inputs_dir.is_dir():
            # Docker would create a missing bind source as an empty root-owned directory.
            raise ValueError(f"job {request.job_id}: inputs directory {request.inputs_dir} does not exist")
        begun = time.monotonic()
        bytes_in = _tree_size(request.inputs_dir)
        for attempt in (1, 2):
            try:
                image_id = self.load_image(artifact=request.artifact, artifact_cid=request.artifact_cid)
            except DockerArtifactRejectedError as rejected:
                logger.warning("job_id=%s image rejected: %s", request.job_id, rejected)
                return ExecutionResult(
                    executor=self.kind,
                    artifact_digest=rejected.digest,
                    exit_code=-1,
                    usage=0,
                    fuel=None,
                    cpu_ms=None,
                    peak_memory=None,
                    wall_ms=round((time.monotonic() - begun) * 1000),
                    bytes_in=bytes_in,
                    bytes_out=0,
                    error=f"image rejected: {rejected}",
                )
            try:
                outcome = self._run_container(request, image_id)
                break
            except docker.errors.ImageNotFound:
                # Removed from the engine behind the cache's back: load it again, once.
                self._forget_image(request.artifact_cid)
                if attempt == 2:
                    raise DockerExecutorError(
                        f"job {request.job_id}: image {image_id} vanished from the engine twice "
                        "while starting the job; is something pruning images?"
                    ) from None
        cpu_ms = None if outcome.cpu_ns is None else math.ceil(outcome.cpu_ns / 1_000_000)
        usage = max(1, cpu_ms or 0)
        error, stopped_by = outcome.error, outcome.stopped_by
        if cpu_ms is not None and cpu_ms > request.max_units:
            usage = request.max_units
            error = error or (f"used {cpu_ms} CPU ms, over the job's limit of {request.max_units} units")
            stopped_by = stopped_by or StopReason.FUEL
        bytes_out = _tree_size(request.outputs_dir)
        if request.max_output_bytes is not None and bytes_out > request.max_output_bytes:
            # Also when the job ended (or another limit stopped it) between two checks.
            if stopped_by is not StopReason.OUTPUT:
                error = _output_reason(request) + (f"; {error}" if error else "")
            stopped_by = StopReason.OUTPUT
        result = ExecutionResult(
            executor=self.kind,
            artifact_digest=image_id,
            exit_code=outcome.exit_code,
            usage=usage,
            fuel=None,
            cpu_ms=cpu_ms,
            peak_memory=outcome.peak_memory,
            wall_ms=outcome.wall_ms,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            error=error,
            stopped_by=stopped_by,
        )
        logger.info(
            "job_id=%s docker run done: exit %s, %s CPU ms, peak %s B, wall %s ms, total %.0f ms%s",
            request.job_id,
            result.exit_code,
            result.cpu_ms,
            result.peak_memory,
            result.wall_ms,
            (time.monotonic() - begun) * 1000,
            f", error: {error}" if error else "",
        )
        return result

    def _run_container(self, request: ExecutionRequest, image_id: str) -> _Outcome:
        client = self._connected()
        user = self._container_user()
        self._prepare_outputs(request.outputs_dir, user)
        run_id = uuid.uuid4().hex[:16]
        cgroup = (
            _CgroupRun(
                root=self._cgroup_root,
                version=self._cgroup_version,
                relative=f"{self._cgroup_parent}/run-{run_id}",
            )
            if self._meter == "cgroup"
            else None
        )
        environment = {
            **request.env,
            "CHAINSCHED_SEED": request.seed.hex(),
            "CHAINSCHED_JOB_ID": str(request.job_id),
        }
        tmpfs_size = min(self._tmpfs_size, request.memory_limit)
        name = f"chainsched-job{request.job_id}-{run_id}"
        logs_dir = Path(tempfile.mkdtemp(prefix="chainsched-logs-", dir=self._work_dir))
        wake = threading.Event()  # the container exited, or its output passed the limit
        capture: _LogCapture | None = None
        try:
            try:
                container = client.containers.create(
                    image_id,
                    command=list(request.args) or None,
                    name=name,
                    labels={
                        "chainsched.executor": "docker",
                        "chainsched.job_id": str(request.job_id),
                    },
                    environment=environment,
                    user=user or None,
                    hostname="sandbox",
                    network_mode=self._network_mode if request.network else "none",
                    volumes={
                        str(request.inputs_dir.resolve()): {"bind": "/inputs", "mode": "ro"},
                        str(request.outputs_dir.resolve()): {"bind": "/outputs", "mode": "rw"},
                    },
                    read_only=True,
                    tmpfs={"/tmp": f"rw,nosuid,nodev,size={tmpfs_size}"},
                    mem_limit=request.memory_limit,
                    memswap_limit=request.memory_limit,
                    nano_cpus=int(self._cpus * 1e9),
                    pids_limit=self._pids_limit,
                    cap_drop=["ALL"],
                    security_opt=["no-new-privileges"],
                    privileged=False,
                    ipc_mode="private",
                    ulimits=[Ulimit(name="core", soft=0, hard=0)],
                    healthcheck={"test": ["NONE"]},
                    cgroup_parent=cgroup.relative if cgroup is not None else None,
                    log_config=LogConfig(type=LogConfig.types.NONE),
                )
                # Attached before the start, so the stream carries all the output.
                capture = _LogCapture(
                    client.api.attach_socket(str(container.id), params={"stdout": 1, "stderr": 1, "stream": 1}),
                    logs_dir,
                    limit=request.max_output_bytes,
                    wake=wake,
                )
                capture.start()
                container.start()
            except docker.errors.ImageNotFound:
                raise
            except docker.errors.APIError as api_error:
                return _Outcome(
                    exit_code=-1,
                    error=f"container could not start: {api_error.explanation or api_error}",
                    cpu_ns=cgroup.cpu_ns() if cgroup else None,
                    peak_memory=cgroup.peak_memory() if cgroup else None,
                    wall_ms=0,
                )
            started = time.monotonic()
            meter: _CgroupRun | _StatsSampler
            if cgroup is not None and cgroup.exists():
                meter = cgroup
            else:
                if cgroup is not None:
                    logger.warning(
                        "job_id=%s cgroup %s not found: the engine does not share this host's "
                        "cgroups; metering by the stats API from now on",
                        request.job_id,
                        cgroup.relative,
                    )
                    self._meter = "stats"
                meter = _StatsSampler(client, str(container.id))
                meter.start()
            exit_code, error, stopped_by = self._supervise(container, request, meter, started, capture, wake)
            measured_ms = round((time.monotonic() - started) * 1000)
            if isinstance(meter, _StatsSampler):
                meter.finish()
            capture.finish(timeout=5.0)
            capture.install(request.outputs_dir)
            state = client.api.inspect_container(str(container.id))["State"]
            if error is None and state.get("OOMKilled"):
                error = f"out of memory: the job's limit is {request.memory_limit} bytes"
                stopped_by = StopReason.MEMORY
            if capture.over and stopped_by is not StopReason.OUTPUT:
                # The copy stopped at the limit and the job ended before the supervisor looked.
                error = _output_reason(request) + (f"; {error}" if error else "")
                stopped_by = StopReason.OUTPUT
            begin, end = (
                _parse_engine_time(state.get("StartedAt")),
                _parse_engine_time(state.get("FinishedAt")),
            )
            wall_ms = round((end - begin) * 1000) if begin and end and end >= begin else measured_ms
            return _Outcome(
                exit_code=exit_code,
                error=error,
                cpu_ns=meter.cpu_ns(),
                peak_memory=meter.peak_memory(),
                wall_ms=wall_ms,
                stopped_by=stopped_by,
            )
        except _ENGINE_ERRORS as engine_error:
            raise self._unavailable(engine_error) from None
        finally:
            # By name, so a container whose create was interrupted before its id came back goes too.
            self._remove_container(client, name, request.job_id)
            if capture is not None:
                capture.close()
            shutil.rmtree(logs_dir, ignore_errors=True)
            if cgroup is not None:
                cgroup.remove()

    def _remove_container(self, client: docker.DockerClient, name: str, job_id: int) -> None:
        """Force-remove a container, retrying while the engine is still busy with it."""
        failure: Exception | None = None
        for _ in range(10):
            try:
                client.api.remove_container(name, force=True, v=True)
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as error:
                # e.g. a start interrupted on our side is still going on in the engine
                failure = error
                time.sleep(0.5)
            except _ENGINE_ERRORS as error:
                failure = error
                break
        logger.warning(
            "job_id=%s could not remove container %s: %s. Remove it with: docker rm -f %s",
            job_id,
            name,
            failure,
            name,
        )

    def _supervise(
        self,
        container: Container,
        request: ExecutionRequest,
        meter: _CgroupRun | _StatsSampler,
        started: float,
        capture: _LogCapture,
        wake: threading.Event,
    ) -> tuple[int, str | None, StopReason | None]:
        """Wait for the container, killing it at the timeout, CPU budget or output limit."""
        done = threading.Event()
        outcome: dict[str, Any] = {}

        def wait() -> None:
            try:
                outcome["status"] = container.wait(timeout=request.timeout + self._api_timeout)
            except BaseException as error:  # noqa: BLE001 - handed to the caller below
                outcome["error"] = error
            finally:
                done.set()
                wake.set()

        threading.Thread(target=wait, name=f"docker-wait-{request.job_id}", daemon=True).start()
        deadline = started + request.timeout
        budget_ns = request.max_units * 1_000_000
        outputs = None
        if request.max_output_bytes is not None:
            outputs = _OutputWatch(root=request.outputs_dir, limit=request.max_output_bytes, capture=capture)
        error: str | None = None
        stopped_by: StopReason | None = None
        while True:
            interval = self._poll_interval
            if outputs is not None:
                due = outputs.seconds_to_next_check(time.monotonic())
                interval = min(interval, max(self._output_poll_interval, due))
            wake.wait(interval)
            wake.clear()
            if done.is_set():
                break
            now = time.monotonic()
            cpu_ns = meter.cpu_ns()
            if now >= deadline:
                error = f"timed out after {request.timeout:g} s; the container was killed"
                stopped_by = StopReason.TIMEOUT
            elif cpu_ns is not None and cpu_ns > budget_ns:
                error = f"used more than the job's limit of {request.max_units} CPU ms; the container was killed"
                stopped_by = StopReason.FUEL
            elif outputs is not None and outputs.exceeded(now):
                error = f"{_output_reason(request)}; the container was killed"
                stopped_by = StopReason.OUTPUT
            else:
                continue
            logger.info("job_id=%s %s", request.job_id, error)
            with contextlib.suppress(docker.errors.APIError):
                container.kill()
            done.wait(self._api_timeout)
            break
        if "error" in outcome:
            failure = outcome["error"]
            if isinstance(failure, _ENGINE_ERRORS):
                raise failure
            raise DockerExecutorError(f"waiting for the container failed: {failure}")
        if "status" not in outcome:
            raise DockerEngineUnavailableError(
                f"the engine did not report the container's exit within {self._api_timeout:g} s of killing it"
            )
        return int(outcome["status"].get("StatusCode", -1)), error, stopped_by
