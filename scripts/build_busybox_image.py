#!/usr/bin/env python3
"""Build the example busybox Docker image as a reproducible ``docker save`` tarball.

No registry is reachable here, so the image is made from Debian's
``busybox-static`` (``apt-get install busybox-static``): one layer holding
``/bin/busybox``, a symlink per applet, ``/etc/passwd`` with ``nobody``, empty
``/inputs``, ``/outputs`` and ``/tmp``, and the example job script at
``/job/wordcount.sh`` (the image's default command).

The tarball is written directly in the ``docker save`` layout (``manifest.json``,
the config JSON named by its sha256, one ``layer.tar``) with fixed timestamps and
owners, so the same busybox binary always gives the same bytes, the same image
id and therefore the same CID. No Docker engine is needed to build it; pass
``--load`` to also load it into the local engine (needs ``docker`` on PATH).

Usage:
    python scripts/build_busybox_image.py                 # examples/docker/busybox.tar
    python scripts/build_busybox_image.py --output /tmp/bb.tar --load
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "examples" / "docker" / "busybox.tar"
DEFAULT_SCRIPT = REPO_ROOT / "examples" / "docker" / "wordcount.sh"
DEFAULT_TAG = "chainsched/busybox-wordcount:1"
NOBODY = "65534:65534"

_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"


def _applets(busybox: Path) -> list[str]:
    """Return the applet names the busybox binary provides (runs it once)."""
    listed = subprocess.run([str(busybox), "--list"], check=True, capture_output=True, text=True).stdout
    return sorted(name for name in listed.split() if name and name != "busybox")


def _add(tar: tarfile.TarFile, info: tarfile.TarInfo, data: bytes | None = None) -> None:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    if data is None:
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _dir(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    return info


def _file(name: str, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info


def build_layer(*, busybox_binary: bytes, applets: Sequence[str], files: Mapping[str, tuple[bytes, int]]) -> bytes:
    """Return the root filesystem layer as deterministic tar bytes.

    Args:
        busybox_binary: The statically linked busybox executable.
        applets: Names to link to ``/bin/busybox``.
        files: Extra files by absolute path, as (content, mode); their parent
            directories are created.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = {"bin", "etc", "inputs", "outputs"}
        for path in files:
            parts = path.strip("/").split("/")[:-1]
            dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        for name in sorted(dirs):
            _add(tar, _dir(name))
        _add(tar, _dir("tmp", 0o1777))
        _add(tar, _file("bin/busybox", 0o755), busybox_binary)
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            link.mode = 0o777
            _add(tar, link)
        _add(tar, _file("etc/passwd", 0o644), _PASSWD)
        _add(tar, _file("etc/group", 0o644), _GROUP)
        for path in sorted(files):
            content, mode = files[path]
            _add(tar, _file(path.strip("/"), mode), content)
    return buffer.getvalue()


def build_config(*, layer_digest: str, cmd: Sequence[str], user: str = NOBODY) -> bytes:
    """Return the image config JSON (its sha256 is the image id).

    Args:
        layer_digest: sha256 hex of the uncompressed layer tar (the diff id).
        cmd: Default command.
        user: Default ``uid:gid``.
    """
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Cmd": list(cmd),
            "Env": ["PATH=/bin"],
            "User": user,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/build_busybox_image.py"}],
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def build_image_tarball(*, layer: bytes, config: bytes, tags: Sequence[str]) -> bytes:
    """Return a ``docker save`` tarball holding one image made of one layer.

    Args:
        layer: The uncompressed layer tar.
        config: The image config JSON bytes.
        tags: ``repo:tag`` names recorded in the manifest (``docker load`` applies them).
    """
    layer_hex = hashlib.sha256(layer).hexdigest()
    config_hex = hashlib.sha256(config).hexdigest()
    manifest = [
        {
            "Config": f"{config_hex}.json",
            "RepoTags": list(tags) or None,
            "Layers": [f"{layer_hex}/layer.tar"],
        }
    ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, _dir(layer_hex))
        _add(tar, _file(f"{layer_hex}/layer.tar", 0o644), layer)
        _add(tar, _file(f"{config_hex}.json", 0o644), config)
        _add(tar, _file("manifest.json", 0o644), json.dumps(manifest).encode())
    return buffer.getvalue()


def build(
    *,
    output: Path,
    busybox: Path = Path("/bin/busybox"),
    script: Path = DEFAULT_SCRIPT,
    tag: str = DEFAULT_TAG,
) -> str:
    """Write the example image tarball and return its image id (``sha256:...``).

    Args:
        output: Where to write the ``docker save`` tarball.
        busybox: A statically linked busybox binary (Debian ``busybox-static``).
        script: The job script baked in as ``/job/wordcount.sh``, the default command.
        tag: The ``repo:tag`` recorded in the tarball.
    """
    if not busybox.is_file():
        raise SystemExit(f"{busybox} not found. Install it: apt-get install -y busybox-static")
    layer = build_layer(
        busybox_binary=busybox.read_bytes(),
        applets=_applets(busybox),
        files={"/job/wordcount.sh": (script.read_bytes(), 0o755)},
    )
    config = build_config(
        layer_digest=hashlib.sha256(layer).hexdigest(),
        cmd=["/bin/sh", "/job/wordcount.sh"],
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(build_image_tarball(layer=layer, config=config, tags=[tag]))
    return f"sha256:{hashlib.sha256(config).hexdigest()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--busybox", type=Path, default=Path("/bin/busybox"))
    parser.add_argument("--script", type=Path, default=DEFAULT_SCRIPT)
    parser.add_argument("--tag", default=DEFAULT_TAG)
    parser.add_argument("--load", action="store_true", help="also `docker load` the tarball")
    args = parser.parse_args(argv)
    image_id = build(output=args.output, busybox=args.busybox, script=args.script, tag=args.tag)
    print(f"{args.output}  {image_id}  {args.tag}")
    if args.load:
        subprocess.run(["docker", "load", "--input", str(args.output)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
