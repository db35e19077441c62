"""Start and stop a private js-ipfs node for tests and the devnet.

The node (npm ``ipfs@0.66.1``, pinned in package.json; ``jsipfs daemon``
serves the same HTTP RPC API as Kubo) gets a fresh repository that listens on
127.0.0.1 only, on ports the OS picks, with no bootstrap peers, no MDNS, no
content routing, no pubsub and no preload nodes: it talks to nobody unless told.

Command line::

    python scripts/ipfs_node.py start --repo DIR [--json]   # prints the API multiaddr
    python scripts/ipfs_node.py stop --repo DIR
    python scripts/ipfs_node.py status --repo DIR

As a module::

    node = ipfs_node.start(Path("/tmp/ipfs-repo"))
    store = IpfsStore(api=node.api).connect()
    ...
    ipfs_node.stop(node.repo)

The daemon's output goes to ``DIR/daemon.log``, its pid to ``DIR/daemon.pid``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["IpfsNode", "IpfsNodeError", "find_jsipfs", "start", "status", "stop"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
JSIPFS_ENV = "JSIPFS"
_LOOPBACK_ANY_PORT = "/ip4/127.0.0.1/tcp/0"


class IpfsNodeError(RuntimeError):
    """The node could not be started or stopped."""


@dataclass(frozen=True, slots=True)
class IpfsNode:
    """A running node.

    Attributes:
        repo: Its repository directory.
        pid: The daemon's process id (also its process group id).
        api: HTTP RPC API multiaddr, e.g. ``/ip4/127.0.0.1/tcp/43297``.
        gateway: Read-only HTTP gateway multiaddr.
    """

    repo: Path
    pid: int
    api: str
    gateway: str

    @property
    def store_url(self) -> str:
        """The `storage.open_store` URL for this node."""
        return f"ipfs:{self.api}"


def find_jsipfs() -> Path:
    """The ``jsipfs`` executable: ``$JSIPFS``, else ``node_modules/.bin/jsipfs``.

    Raises:
        IpfsNodeError: it is not installed.
    """
    candidate = Path(os.environ.get(JSIPFS_ENV) or PROJECT_ROOT / "node_modules" / ".bin" / "jsipfs")
    if not os.access(candidate, os.X_OK):
        raise IpfsNodeError(
            f"{candidate} not found. Install the pinned js-ipfs with `npm ci` in {PROJECT_ROOT} "
            f"(or set ${JSIPFS_ENV} to a jsipfs executable)."
        )
    return candidate


def _env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["IPFS_PATH"] = str(repo)
    env.pop("DEBUG", None)  # libp2p debug logging would flood daemon.log
    return env


def _private_config(config: dict[str, object]) -> dict[str, object]:
    addresses = config.setdefault("Addresses", {})
    assert isinstance(addresses, dict)
    addresses.update(
        {
            "Swarm": [_LOOPBACK_ANY_PORT],
            "API": _LOOPBACK_ANY_PORT,
            "Gateway": _LOOPBACK_ANY_PORT,
            "Announce": [],
            "NoAnnounce": [],
            "Delegates": [],
        }
    )
    addresses.pop("RPC", None)  # the gRPC server wants a fixed port; nothing here uses it
    config["Bootstrap"] = []
    config["Discovery"] = {
        "MDNS": {"Enabled": False, "Interval": 10},
        "webRTCStar": {"Enabled": False},
    }
    config["Routing"] = {"Type": "none"}
    config["Pubsub"] = {"Router": "gossipsub", "Enabled": False}
    swarm = config.setdefault("Swarm", {})
    assert isinstance(swarm, dict)
    swarm["DisableNatPortMap"] = True
    return config


def init_repo(repo: Path) -> None:
    """Create a fresh repository in ``repo`` and make it private (see module docstring).

    Raises:
        IpfsNodeError: ``jsipfs init`` failed.
    """
    repo.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [str(find_jsipfs()), "init", "--profile=test", "--empty-repo"],
        env=_env(repo),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise IpfsNodeError(f"jsipfs init failed in {repo}:\n{result.stdout}{result.stderr}")
    config_path = repo / "config"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(_private_config(config), indent=2))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as gone
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _is_our_daemon(pid: int, repo: Path) -> bool:
    """True when ``pid`` is a js-ipfs process started on ``repo``.

    js-ipfs renames its process to ``ipfs``, so its environment is what tells.
    """
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"IPFS_PATH={repo}".encode() in environ


def _api_answers(api: str) -> bool:
    parts = api.split("/")
    url = f"http://{parts[2]}:{parts[4]}/api/v0/version"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _strip_http(multiaddr: str) -> str:
    return multiaddr.strip().removesuffix("/http")


def _log_tail(repo: Path, lines: int = 30) -> str:
    try:
        return "\n".join((repo / "daemon.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no daemon.log)"


def _ready_since(repo: Path, offset: int) -> bool:
    """Whether the daemon started at log ``offset`` has logged that it is ready."""
    try:
        with open(repo / "daemon.log", "rb") as log:
            log.seek(offset)
            return b"Daemon is ready" in log.read()
    except OSError:
        return False


_children: dict[int, subprocess.Popen[bytes]] = {}


def start(repo: Path, *, timeout: float = 90.0) -> IpfsNode:
    """Start a daemon on ``repo`` (initialised first if empty) and wait until its API answers.

    Raises:
        IpfsNodeError: a daemon already runs on ``repo``, or it did not come up in time.
    """
    repo = Path(repo).resolve()
    running = status(repo)
    if running is not None:
        raise IpfsNodeError(f"A node already runs on {repo} (pid {running.pid}, api {running.api}).")
    if not (repo / "config").exists():
        init_repo(repo)
    for stale in ("api", "repo.lock", "daemon.pid"):
        (repo / stale).unlink(missing_ok=True)
    log = open(repo / "daemon.log", "ab")  # noqa: SIM115 - handed to the child process
    logged_before = log.tell()
    try:
        process = subprocess.Popen(
            [str(find_jsipfs()), "daemon", "--enable-preload=false"],
            env=_env(repo),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()
    _children[process.pid] = process
    (repo / "daemon.pid").write_text(f"{process.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _children.pop(process.pid, None)
            raise IpfsNodeError(f"jsipfs daemon exited with {process.returncode}; daemon.log:\n{_log_tail(repo)}")
        node = _read_node(repo, process.pid)
        # The API file and port come before the gateway's line in the log: wait for "ready",
        # so the node returned names its gateway as `status` will later.
        if node is not None and _api_answers(node.api) and _ready_since(repo, logged_before):
            return _read_node(repo, process.pid) or node
        time.sleep(0.2)
    stop(repo)
    raise IpfsNodeError(f"jsipfs daemon did not answer within {timeout:g}s; daemon.log:\n{_log_tail(repo)}")


def _read_node(repo: Path, pid: int) -> IpfsNode | None:
    try:
        api = _strip_http((repo / "api").read_text())
    except OSError:
        return None
    gateway = ""
    for line in _log_tail(repo, 50).splitlines():
        if line.startswith("Gateway (read only) listening on "):
            gateway = _strip_http(line.rsplit(" ", 1)[1])
    return IpfsNode(repo=repo, pid=pid, api=api, gateway=gateway)


def status(repo: Path) -> IpfsNode | None:
    """The node running on ``repo``, or None."""
    repo = Path(repo).resolve()
    try:
        pid = int((repo / "daemon.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    if not _alive(pid) or not _is_our_daemon(pid, repo):
        return None
    return _read_node(repo, pid)


def stop(repo: Path, *, timeout: float = 15.0) -> bool:
    """Stop the daemon on ``repo``: SIGTERM, then SIGKILL after ``timeout``.

    Returns:
        True if a daemon was running.
    """
    repo = Path(repo).resolve()
    try:
        pid = int((repo / "daemon.pid").read_text().strip())
    except (OSError, ValueError):
        return False
    if not _alive(pid) or not _is_our_daemon(pid, repo):
        (repo / "daemon.pid").unlink(missing_ok=True)
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    child = _children.pop(pid, None)
    while _alive(pid) and time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            break
        time.sleep(0.1)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    if child is not None:
        child.wait(timeout=timeout)
    for stale in ("daemon.pid", "api", "repo.lock"):
        (repo / stale).unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--repo", type=Path, required=True, help="node repository directory")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            node: IpfsNode | None = start(args.repo, timeout=args.timeout)
        elif args.command == "stop":
            stopped = stop(args.repo, timeout=args.timeout)
            print(json.dumps({"stopped": stopped}) if args.json else ("stopped" if stopped else "not running"))
            return 0
        else:
            node = status(args.repo)
    except IpfsNodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if node is None:
        print(json.dumps(None) if args.json else "not running")
        return 3
    if args.json:
        print(json.dumps({**asdict(node), "repo": str(node.repo), "store_url": node.store_url}))
    else:
        print(node.api)
        print(f"export CHAINSCHED_STORE={node.store_url}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
