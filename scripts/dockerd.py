#!/usr/bin/env python3
"""Start, check and stop a local Docker engine for tests and the devnet.

The machine ships the docker client only; Debian's ``docker.io`` provides
``dockerd`` (``apt-get install -y docker.io``). It runs here without iptables
and without the default bridge (jobs run with ``--network none``). The storage
driver is overlay2 when the kernel allows it (container creation takes about
20 ms, against about 300 ms for vfs, which copies the whole image for every
container), else vfs, which works anywhere.

``start`` does nothing when an engine already answers on the socket; otherwise
it launches ``dockerd`` in its own session, waits until ``/_ping`` answers and
writes a pid file. ``stop`` stops only an engine this script started (the one
named by the pid file): SIGTERM, then SIGKILL after a grace period.

Usage:
    python scripts/dockerd.py start     # prints "running" or "started PID"
    python scripts/dockerd.py status    # exit code 0 when the engine answers
    python scripts/dockerd.py stop

From Python (the tests' session fixture)::

    handle = start()        # None when an engine was already running
    ...
    if handle is not None:
        stop(handle)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SOCKET = Path("/var/run/docker.sock")
STATE_DIR = Path("/tmp/chainsched-dockerd")
DOCKERD_FLAGS = ("--iptables=false", "--ip6tables=false", "--bridge=none")
STORAGE_DRIVERS = ("overlay2", "vfs")


@dataclass(frozen=True, slots=True)
class DockerdHandle:
    """An engine this script started.

    Attributes:
        pid: Process id of ``dockerd``.
        pid_file: File recording ``pid``; removed by ``stop``.
        log_file: Where the engine's output goes.
        process: The ``Popen`` when started by this process (None when
            rebuilt from the pid file); ``stop`` reaps it.
    """

    pid: int
    pid_file: Path
    log_file: Path
    process: subprocess.Popen[bytes] | None = field(default=None, compare=False, repr=False)


def is_running(socket_path: Path = SOCKET, timeout: float = 2.0) -> bool:
    """Return True when an engine answers ``GET /_ping`` on ``socket_path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(1024)
    except OSError:
        return False
    status_line = reply.split(b"\r\n", 1)[0].split()
    return status_line[:1] in ([b"HTTP/1.0"], [b"HTTP/1.1"]) and status_line[1:2] == [b"200"]


def start(
    *,
    socket_path: Path = SOCKET,
    state_dir: Path = STATE_DIR,
    timeout: float = 60.0,
    storage_drivers: Sequence[str] = STORAGE_DRIVERS,
    extra_flags: Sequence[str] = (),
) -> DockerdHandle | None:
    """Start ``dockerd`` unless an engine already answers; wait until it is ready.

    Args:
        socket_path: The engine's unix socket.
        state_dir: Holds the pid file and the engine log.
        timeout: Seconds to wait for the engine to answer.
        storage_drivers: Drivers to try in order; the next is tried when
            ``dockerd`` exits at once (the kernel does not support the driver).
        extra_flags: More ``dockerd`` flags.

    Returns:
        A handle to pass to ``stop``, or None when an engine was already running
        (then nothing must be stopped).

    Raises:
        RuntimeError: ``dockerd`` is missing, exited, or did not answer in time;
            the message names the log file.
    """
    if is_running(socket_path):
        return None
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise RuntimeError("dockerd not found. Install it: apt-get install -y docker.io")
    state_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for driver in storage_drivers:
        try:
            return _start_one(
                [
                    dockerd,
                    *DOCKERD_FLAGS,
                    f"--storage-driver={driver}",
                    f"--host=unix://{socket_path}",
                    *extra_flags,
                ],
                socket_path=socket_path,
                state_dir=state_dir,
                timeout=timeout,
            )
        except _EarlyExitError as error:
            failures.append(f"{driver}: {error}")
    raise RuntimeError("dockerd did not start with any storage driver: " + "; ".join(failures))


class _EarlyExitError(RuntimeError):
    """dockerd exited before it answered (e.g. an unsupported storage driver)."""


def _start_one(command: list[str], *, socket_path: Path, state_dir: Path, timeout: float) -> DockerdHandle:
    log_file = state_dir / "dockerd.log"
    pid_file = state_dir / "dockerd.pid"
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    handle = DockerdHandle(pid=process.pid, pid_file=pid_file, log_file=log_file, process=process)
    pid_file.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + timeout
    while not is_running(socket_path, timeout=1.0):
        if process.poll() is not None:
            pid_file.unlink(missing_ok=True)
            raise _EarlyExitError(f"dockerd exited with code {process.returncode}. See {log_file}")
        if time.monotonic() > deadline:
            stop(handle)
            raise RuntimeError(f"dockerd did not answer within {timeout:.0f} s. See {log_file}")
        time.sleep(0.1)
    return handle


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process counts as gone once reaped.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def stop(handle: DockerdHandle, *, grace: float = 20.0) -> None:
    """Stop an engine this script started: SIGTERM, then SIGKILL after ``grace`` s."""
    if handle.process is not None:
        if handle.process.poll() is None:
            handle.process.terminate()
            try:
                handle.process.wait(grace)
            except subprocess.TimeoutExpired:
                handle.process.kill()
                handle.process.wait()
    elif _alive(handle.pid):
        os.kill(handle.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _alive(handle.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(handle.pid):
            os.kill(handle.pid, signal.SIGKILL)
            while _alive(handle.pid):
                time.sleep(0.05)
    handle.pid_file.unlink(missing_ok=True)


def _handle_from_pid_file(state_dir: Path) -> DockerdHandle | None:
    pid_file = state_dir / "dockerd.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return DockerdHandle(pid=pid, pid_file=pid_file, log_file=state_dir / "dockerd.log")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start, check or stop a local dockerd.")
    parser.add_argument("action", choices=["start", "status", "stop"])
    parser.add_argument("--socket", type=Path, default=SOCKET)
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    args = parser.parse_args(argv)
    if args.action == "status":
        running = is_running(args.socket)
        print("running" if running else "not running")
        return 0 if running else 1
    if args.action == "start":
        try:
            handle = start(socket_path=args.socket, state_dir=args.state_dir)
        except RuntimeError as error:
            print(error, file=sys.stderr)
            return 1
        print("running" if handle is None else f"started {handle.pid}")
        return 0
    handle = _handle_from_pid_file(args.state_dir)
    if handle is None:
        print("no dockerd started by this script; nothing to stop")
        return 0
    stop(handle)
    print(f"stopped {handle.pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
