"""The Docker executor on a real engine with a locally built busybox image.

Each test runs real containers: the sandbox's limits are shown by programs that
try to break them (reach the network, write the root filesystem or the inputs,
run past the timeout or the CPU budget, exhaust memory or processes) and by the
tarball checks refusing an altered image before anything runs.
"""

from __future__ import annotations

import _thread
import gc
import io
import json
import os
import signal
import socket
import tarfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import pytest

from compute_node.executors._base import ExecutionRequest, ExecutionResult, Executor, StopReason
from compute_node.executors._docker import (
    DockerEngineUnavailableError,
    DockerExecutor,
    repack_verified,
)

if TYPE_CHECKING:
    from conftest_docker import BusyboxImage, DockerTestEnv

pytest_plugins = ["conftest_docker"]

RequestFactory = Callable[..., ExecutionRequest]
WORDS = {"a.txt": b"one two three\nfour\n", "sub/b.txt": b"five six\n"}
MiB = 1024 * 1024


@pytest.fixture
def docker_request(
    make_request: RequestFactory, busybox_image: BusyboxImage, docker_test_env: DockerTestEnv
) -> Callable[..., ExecutionRequest]:
    """``make_request`` for the busybox image, with this session's job id."""

    def factory(*args: str, **overrides: object) -> ExecutionRequest:
        fields: dict[str, object] = {
            "job_id": docker_test_env.job_id,
            "args": tuple(args),
            "inputs": WORDS,
            "memory_limit": 64 * 1024 * 1024,
            "max_units": 60_000,
        }
        fields.update(overrides)
        artifact = fields.pop("artifact", busybox_image.tarball)
        return make_request(artifact, **fields)

    return factory


@pytest.fixture
def make_docker_executor(
    docker_engine: docker.DockerClient, docker_test_env: DockerTestEnv
) -> Iterator[Callable[..., DockerExecutor]]:
    """Build extra executors (other settings) that share the session's cache and cgroup."""
    made: list[DockerExecutor] = []

    def factory(**settings: object) -> DockerExecutor:
        fields: dict[str, object] = {
            "image_repository": docker_test_env.repository,
            "cgroup_parent": docker_test_env.cgroup_parent,
        }
        fields.update(settings)
        executor = DockerExecutor(**fields)  # type: ignore[arg-type]
        made.append(executor)
        return executor

    yield factory
    for executor in made:
        executor.close()


def run(executor: DockerExecutor, request: ExecutionRequest) -> tuple[ExecutionResult, str, str]:
    result = executor.run(request)
    stdout = (request.outputs_dir / "stdout").read_text()
    stderr = (request.outputs_dir / "stderr").read_text()
    return result, stdout, stderr


def altered_tarball(source: Path, target: Path, change: Callable[[str, bytes], bytes]) -> Path:
    """Copy a tarball, passing each member's bytes through ``change(name, data)``."""
    with tarfile.open(source) as src, tarfile.open(target, "w") as out:
        for member in src.getmembers():
            if not member.isfile():
                out.addfile(member)
                continue
            extracted = src.extractfile(member)
            assert extracted is not None
            data = change(member.name, extracted.read())
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    return target


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello from the host")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def host_server() -> Iterator[int]:
    """An HTTP server on the host's 127.0.0.1; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


# ----------------------------------------------------------------- running jobs


def test_implements_the_executor_protocol(docker_executor: DockerExecutor) -> None:
    assert isinstance(docker_executor, Executor)
    assert docker_executor.kind == "docker"


def test_wordcount_job_reads_inputs_and_writes_outputs(
    docker_executor: DockerExecutor, docker_request: RequestFactory, busybox_image: BusyboxImage
) -> None:
    # Given the example image, whose default command word-counts /inputs
    request = docker_request()

    # When it runs with no arguments
    result, stdout, stderr = run(docker_executor, request)

    # Then the counts are in /outputs and stdout, and the receipt names the image
    assert (result.exit_code, result.error, stderr) == (0, None, "")
    assert (request.outputs_dir / "counts.tsv").read_text() == (
        "path\tlines\twords\tbytes\na.txt\t2\t4\t19\nsub/b.txt\t1\t2\t9\ntotal\t3\t6\t28\n"
    )
    assert stdout == "total\t3\t6\t28\n"
    assert result.executor == "docker"
    assert result.artifact_digest == busybox_image.image_id
    assert result.bytes_in == 28
    assert result.bytes_out == (request.outputs_dir / "counts.tsv").stat().st_size + len(stdout)


def test_args_replace_the_command_and_the_seed_is_passed(
    docker_executor: DockerExecutor, docker_request: RequestFactory, docker_test_env: DockerTestEnv
) -> None:
    request = docker_request("sh", "-c", 'echo "$CHAINSCHED_SEED $CHAINSCHED_JOB_ID"; exit 3')
    result, stdout, _ = run(docker_executor, request)
    assert (result.exit_code, result.error) == (3, None)
    assert stdout == f"{request.seed.hex()} {docker_test_env.job_id}\n"
    assert not (request.outputs_dir / "counts.tsv").exists()


def test_usage_figures_come_from_the_cgroup(docker_executor: DockerExecutor, docker_request: RequestFactory) -> None:
    busy = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"
    result, _, _ = run(docker_executor, docker_request("sh", "-c", busy))
    assert result.error is None
    assert result.cpu_ms is not None
    assert result.cpu_ms >= 50
    assert result.usage == result.cpu_ms
    assert result.peak_memory is not None
    assert result.peak_memory > 0
    assert result.wall_ms > 0
    assert result.fuel is None


def test_stats_meter_fallback_reports_usage(
    make_docker_executor: Callable[..., DockerExecutor], docker_request: RequestFactory
) -> None:
    executor = make_docker_executor(meter="stats")
    # Busy for 2 to 3 s, so the stats stream (about one sample a second) sees it run
    busy = "end=$(($(date +%s) + 3)); while [ $(date +%s) -lt $end ]; do :; done"
    result, _, _ = run(executor, docker_request("sh", "-c", busy))
    assert result.error is None
    assert result.cpu_ms is not None
    assert result.cpu_ms > 0
    assert result.usage == result.cpu_ms


def test_image_cache_is_keyed_by_cid(
    docker_executor: DockerExecutor,
    make_docker_executor: Callable[..., DockerExecutor],
    docker_request: RequestFactory,
    busybox_image: BusyboxImage,
    tmp_path: Path,
) -> None:
    # Given an image loaded under a fresh CID from a copy of the tarball
    copy = tmp_path / "copy.tar"
    copy.write_bytes(busybox_image.tarball.read_bytes())
    cid = f"test-cid-{uuid.uuid4().hex}"
    first = docker_executor.run(docker_request("true", artifact=copy, artifact_cid=cid))
    assert (first.exit_code, first.error) == (0, None)

    # When the tarball is gone, the same CID still runs: from memory, and from the
    # engine's tag for a new executor (a restarted node)
    copy.unlink()
    again = docker_executor.run(docker_request("true", artifact=copy, artifact_cid=cid))
    restarted = make_docker_executor()
    after_restart = restarted.run(docker_request("true", artifact=copy, artifact_cid=cid))

    # Then both ran the verified image; an unknown CID needs its tarball
    assert (again.exit_code, again.error, again.artifact_digest) == (0, None, first.artifact_digest)
    assert (after_restart.exit_code, after_restart.artifact_digest) == (0, first.artifact_digest)
    missing = docker_executor.run(docker_request("true", artifact=copy, artifact_cid="other"))
    assert missing.error is not None
    assert "not a docker save tarball" in missing.error


def test_image_removed_from_the_engine_is_loaded_again(
    docker_executor: DockerExecutor,
    docker_engine: docker.DockerClient,
    docker_request: RequestFactory,
    build_busybox_image: Callable[..., BusyboxImage],
    tmp_path: Path,
) -> None:
    # Given an image of its own (so removing it touches no other test's image), run once
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho variant\n")
    variant = build_busybox_image(output=tmp_path / "variant.tar", script=script)
    request = docker_request(artifact=variant.tarball, artifact_cid=f"variant-{uuid.uuid4().hex}")
    assert docker_executor.run(request).exit_code == 0

    # When the engine loses it behind the executor's back
    docker_engine.images.remove(variant.image_id, force=True)

    # Then the next run of the CID loads it again from the tarball
    result, stdout, _ = run(
        docker_executor, docker_request(artifact=variant.tarball, artifact_cid=request.artifact_cid)
    )
    assert (result.exit_code, result.error, stdout) == (0, None, "variant\n")
    assert result.artifact_digest == variant.image_id
    docker_engine.images.remove(variant.image_id, force=True)


def test_outputs_named_stdout_cannot_redirect_the_host_write(
    docker_executor: DockerExecutor, docker_request: RequestFactory, tmp_path: Path
) -> None:
    # Given a host file and a job that plants /outputs/stdout as a symlink to it
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    request = docker_request("sh", "-c", f"ln -s {victim} /outputs/stdout; echo written")

    result = docker_executor.run(request)

    # Then the host file is untouched and stdout is a regular file
    assert result.exit_code == 0
    assert victim.read_text() == "keep me"
    stdout = request.outputs_dir / "stdout"
    assert not stdout.is_symlink()
    assert stdout.read_text() == "written\n"


# ----------------------------------------------------------------- the sandbox


def test_no_network_but_loopback(
    docker_executor: DockerExecutor, docker_request: RequestFactory, host_server: int
) -> None:
    # Given a server on the host's loopback that the host itself can reach
    with socket.create_connection(("127.0.0.1", host_server), timeout=2):
        pass
    probe = (
        "ls /sys/class/net; "
        f"nc -w 2 127.0.0.1 {host_server} </dev/null && echo host-reached; "
        "nc -w 2 10.1.2.3 80 </dev/null && echo outside-reached; true"
    )

    # When a job without network tries to reach it and the outside
    result, stdout, stderr = run(docker_executor, docker_request("sh", "-c", probe))

    # Then it only has a loopback interface of its own and reaches nothing
    assert result.exit_code == 0
    assert stdout.split() == ["lo"]
    assert "Connection refused" in stderr
    assert "Network is unreachable" in stderr


def test_network_is_given_only_when_the_request_allows_it(
    make_docker_executor: Callable[..., DockerExecutor], docker_request: RequestFactory, host_server: int
) -> None:
    # The engine here has no bridge, so the provider configures host networking
    # for jobs that may use the network; the same probe then reaches the server.
    executor = make_docker_executor(network_mode="host")
    # stdin stays open a second so nc waits for the reply
    probe = f"(printf 'GET / HTTP/1.0\\r\\n\\r\\n'; sleep 1) | nc -w 2 127.0.0.1 {host_server}"
    allowed, stdout, _ = run(executor, docker_request("sh", "-c", probe, network=True))
    denied, denied_stdout, _ = run(executor, docker_request("sh", "-c", probe, network=False))
    assert allowed.exit_code == 0
    assert "hello from the host" in stdout
    assert denied.exit_code != 0
    assert "hello" not in denied_stdout


def test_root_filesystem_is_read_only_and_tmp_is_writable(
    docker_executor: DockerExecutor, docker_request: RequestFactory
) -> None:
    script = "touch /bin/planted; echo tmp-ok > /tmp/x && cat /tmp/x"
    result, stdout, stderr = run(docker_executor, docker_request("sh", "-c", script))
    assert result.exit_code == 0
    assert "Read-only file system" in stderr
    assert stdout == "tmp-ok\n"


def test_inputs_are_read_only(docker_executor: DockerExecutor, docker_request: RequestFactory) -> None:
    request = docker_request("sh", "-c", "echo changed > /inputs/a.txt; rm /inputs/sub/b.txt; cat /inputs/a.txt")
    result, stdout, stderr = run(docker_executor, request)
    assert result.exit_code == 0
    assert stderr.count("Read-only file system") == 2
    assert stdout == WORDS["a.txt"].decode()
    assert (request.inputs_dir / "a.txt").read_bytes() == WORDS["a.txt"]
    assert (request.inputs_dir / "sub" / "b.txt").exists()


def test_runs_unprivileged(docker_executor: DockerExecutor, docker_request: RequestFactory) -> None:
    script = "id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status"
    result, stdout, _ = run(docker_executor, docker_request("sh", "-c", script))
    assert result.exit_code == 0
    lines = stdout.splitlines()
    if os.geteuid() == 0:
        assert lines[0] == "65534"
    assert "CapEff:\t0000000000000000" in lines
    assert "CapBnd:\t0000000000000000" in lines
    assert "NoNewPrivs:\t1" in lines


def test_killed_at_timeout_and_removed(
    docker_executor: DockerExecutor,
    docker_engine: docker.DockerClient,
    docker_request: RequestFactory,
    docker_test_env: DockerTestEnv,
) -> None:
    result, _, _ = run(docker_executor, docker_request("sleep", "30", timeout=1.0))
    assert result.error is not None
    assert "timed out after 1 s" in result.error
    assert result.stopped_by is StopReason.TIMEOUT
    assert result.exit_code == 137  # SIGKILL
    assert result.wall_ms < 30_000
    assert result.usage >= 1
    assert docker_test_env.containers(docker_engine) == []


def test_cpu_budget_kills_the_job(docker_executor: DockerExecutor, docker_request: RequestFactory) -> None:
    result, _, _ = run(docker_executor, docker_request("sh", "-c", "while :; do :; done", max_units=200))
    assert result.error is not None
    assert "limit of 200 CPU ms" in result.error
    assert result.stopped_by is StopReason.FUEL  # the units budget: CPU ms for Docker
    assert result.exit_code == 137
    assert result.usage == 200
    assert result.cpu_ms is not None
    assert result.cpu_ms > 200


def test_memory_limit_is_enforced(docker_executor: DockerExecutor, docker_request: RequestFactory) -> None:
    # tail buffers the last 100 MB of an endless stream, past the 32 MiB limit
    request = docker_request("sh", "-c", "tail -c 100000000 /dev/zero | wc -c", memory_limit=32 * 1024 * 1024)
    result, stdout, _ = run(docker_executor, request)
    assert result.error is not None
    assert "out of memory" in result.error
    assert result.stopped_by is StopReason.MEMORY
    assert stdout == "0\n"
    assert result.peak_memory is not None
    assert result.peak_memory > 16 * 1024 * 1024


@pytest.mark.parametrize(
    "script",
    [
        "head -c 2000000000 /dev/zero > /outputs/big",
        "head -c 2000000000 /dev/zero",
        "i=0; while :; do i=$((i+1)); head -c 100000 /dev/zero > /outputs/part-$i; done",
    ],
    ids=["file", "stdout", "many-files"],
)
def test_output_limit_kills_a_job_writing_without_end(
    docker_executor: DockerExecutor, docker_request: RequestFactory, script: str
) -> None:
    # Given a job that would write 2 GB (or files without end) and a limit of 1 MiB
    request = docker_request("sh", "-c", script, max_output_bytes=MiB, timeout=30.0)

    # When it runs
    result = docker_executor.run(request)

    # Then it is killed early, with what it left on disk close to the limit
    assert result.stopped_by is StopReason.OUTPUT
    assert result.error is not None
    assert "wrote more than max_output_bytes=1048576 under /outputs" in result.error
    assert result.exit_code == 137
    on_disk = sum(p.stat().st_size for p in request.outputs_dir.rglob("*") if p.is_file())
    assert result.bytes_out == on_disk
    # stdout and stderr stop at the limit; files are checked every 5 ms near it
    assert (request.outputs_dir / "stdout").stat().st_size <= MiB
    assert on_disk < MiB + 64 * MiB


@pytest.mark.parametrize(
    ("script", "limit", "stopped_by", "exit_codes", "stdout_bytes"),
    [
        ("head -c 3000 /dev/zero > /outputs/x", 1000, StopReason.OUTPUT, {0}, 0),
        # The copy of stdout stops at the limit and wakes the supervisor, which
        # kills the job unless it has ended already: either way it is OUTPUT.
        ("head -c 3000 /dev/zero", 1000, StopReason.OUTPUT, {0, 137}, 1000),
        ("head -c 3000 /dev/zero > /outputs/x; head -c 3000 /dev/zero", 10_000, None, {0}, 3000),
    ],
    ids=["file-over", "stdout-over", "under"],
)
def test_job_that_ends_over_the_output_limit_is_an_output_stop(
    make_docker_executor: Callable[..., DockerExecutor],
    docker_request: RequestFactory,
    script: str,
    limit: int,
    stopped_by: StopReason | None,
    exit_codes: set[int],
    stdout_bytes: int,
) -> None:
    # An executor that does not measure /outputs while the job runs: only the end counts
    executor = make_docker_executor(poll_interval=60.0, output_poll_interval=60.0)
    request = docker_request("sh", "-c", script, max_output_bytes=limit)

    result = executor.run(request)

    assert result.exit_code in exit_codes
    assert result.stopped_by is stopped_by
    assert (result.error is not None) == (stopped_by is not None)
    assert result.bytes_out <= 6000
    assert (request.outputs_dir / "stdout").stat().st_size == stdout_bytes


def test_pids_limit_is_enforced(docker_executor: DockerExecutor, docker_request: RequestFactory) -> None:
    script = "for i in $(seq 40); do sleep 10 & done; wait"  # the shell exits when fork fails
    result, _, stderr = run(docker_executor, docker_request("sh", "-c", script))
    assert "can't fork" in stderr
    assert result.error is None  # the program failed, not the sandbox


def test_keyboard_interrupt_still_removes_the_container(
    docker_executor: DockerExecutor,
    docker_engine: docker.DockerClient,
    docker_request: RequestFactory,
    docker_test_env: DockerTestEnv,
) -> None:
    # Given a watcher that presses Ctrl-C once the job's container is running
    filters = {"label": f"chainsched.job_id={docker_test_env.job_id}", "status": "running"}
    interrupted = threading.Event()
    gave_up = threading.Event()

    def interrupt_when_running() -> None:
        deadline = time.monotonic() + 20
        while not gave_up.is_set() and time.monotonic() < deadline:
            if docker_engine.containers.list(filters=filters):
                interrupted.set()
                _thread.interrupt_main()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=interrupt_when_running, daemon=True)
    # Ctrl-C must raise KeyboardInterrupt here even when the process started with SIGINT ignored
    # (a non-interactive shell starts its background jobs so, and Python keeps it).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    watcher.start()

    # When the executor is interrupted while it supervises the job
    try:
        with pytest.raises(KeyboardInterrupt):
            docker_executor.run(docker_request("sleep", "30", timeout=25.0))
    finally:
        gave_up.set()
        watcher.join()
        signal.signal(signal.SIGINT, previous)

    # Then the container and its cgroup are gone
    assert interrupted.is_set()
    assert docker_test_env.containers(docker_engine) == []
    assert docker_test_env.run_cgroups() == []


# ----------------------------------------------------------------- content addressing


def test_tarball_verifies_to_the_config_digest(busybox_image: BusyboxImage) -> None:
    with io.BytesIO() as repacked:
        assert repack_verified(busybox_image.tarball, repacked) == busybox_image.image_id


@pytest.mark.parametrize(
    ("what", "change", "reason"),
    [
        (
            "config",
            lambda name, data: (
                data.replace(b"wordcount.sh", b"wordcount.sx")
                if name.endswith(".json") and name != "manifest.json"
                else data
            ),
            "image config hashes to",
        ),
        (
            "layer",
            lambda name, data: (
                data.replace(b"nobody:x:65534", b"nobodx:x:65534") if name.endswith("layer.tar") else data
            ),
            "layer 0",
        ),
        (
            "manifest",
            lambda name, data: json.dumps(json.loads(data) * 2).encode() if name == "manifest.json" else data,
            "exactly one image",
        ),
    ],
)
def test_altered_tarball_is_refused_before_running(
    docker_executor: DockerExecutor,
    docker_engine: docker.DockerClient,
    docker_request: RequestFactory,
    busybox_image: BusyboxImage,
    docker_test_env: DockerTestEnv,
    tmp_path: Path,
    what: str,
    change: Callable[[str, bytes], bytes],
    reason: str,
) -> None:
    # Given the example tarball with its {what} altered
    bad = altered_tarball(busybox_image.tarball, tmp_path / f"bad-{what}.tar", change)
    images_before = {image.id for image in docker_engine.images.list(all=True)}

    # When a job names it
    request = docker_request(artifact=bad, artifact_cid=f"bad-{what}-{uuid.uuid4().hex}")
    result = docker_executor.run(request)

    # Then nothing ran or was loaded, and the error says why
    assert result.error is not None
    assert result.error.startswith("image rejected")
    assert reason in result.error
    assert (result.exit_code, result.usage) == (-1, 0)
    assert not (request.outputs_dir / "counts.tsv").exists()
    assert {image.id for image in docker_engine.images.list(all=True)} == images_before
    assert docker_test_env.containers(docker_engine) == []


def test_file_that_is_not_a_tarball_is_refused(
    docker_executor: DockerExecutor, docker_request: RequestFactory, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\0asm not an image")
    result = docker_executor.run(docker_request(artifact=junk, artifact_cid="junk-cid"))
    assert result.error is not None
    assert "not a docker save tarball" in result.error
    assert result.artifact_digest == ""


# ----------------------------------------------------------------- engine and cleanup


def test_unreachable_engine_raises_a_retryable_error(docker_request: RequestFactory, tmp_path: Path) -> None:
    executor = DockerExecutor(base_url=f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(DockerEngineUnavailableError, match="did not answer"):
        executor.run(docker_request("true"))
    # docker-py leaves the socket of a failed connection to the garbage collector
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_no_containers_or_cgroups_left_behind(
    docker_executor: DockerExecutor,
    docker_engine: docker.DockerClient,
    docker_request: RequestFactory,
    docker_test_env: DockerTestEnv,
) -> None:
    # A run that fails to start (unknown command) is cleaned up as well
    result = docker_executor.run(docker_request("/no/such/program"))
    assert result.error is not None
    assert "could not start" in result.error
    assert docker_test_env.containers(docker_engine) == []
    assert docker_test_env.run_cgroups() == []
