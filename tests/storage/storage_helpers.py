"""Helpers shared by the storage tests: the vectors' inputs, tree comparison, hand-built DAGs."""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import os
import re
from pathlib import Path

from storage._car import write_car
from storage._cid import DAG_PB, RAW, Cid, encode_varint
from storage._unixfs import PBLink, encode_directory

ROOT = Path(__file__).resolve().parents[2]
VECTORS = Path(__file__).with_name("data") / "cid-vectors.json"


def stream(n: int, seed: bytes = b"chain-scheduler") -> bytes:
    """The vectors' generator: sha256(seed + i as 8 big-endian bytes) for i = 0, 1, ..."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed + i.to_bytes(8, "big")).digest()
        i += 1
    return bytes(out[:n])


@functools.cache
def vector_bytes(spec: str) -> bytes:
    """A vector's ``bytes`` field: ``b'...'`` or ``stream(n[, seed=b'...'])``."""
    generated = re.fullmatch(r"stream\((\d+)(?:, seed=(b'[^']*'))?\)", spec)
    if generated:
        size, seed = generated.groups()
        return stream(int(size), ast.literal_eval(seed) if seed else b"chain-scheduler")
    literal = ast.literal_eval(spec)
    assert isinstance(literal, bytes), spec
    return literal


def make_vector_dir(base: Path, layout: dict[str, str]) -> Path:
    """Build the vectors' directory layout under ``base``."""
    for rel, spec in layout.items():
        path = base / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(vector_bytes(spec.split(" (")[0]))
    return base


def tree(root: Path) -> dict[str, bytes | None]:
    """Relative path -> content (None for a directory), for comparing trees."""
    found: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), root)] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, root)] = Path(path).read_bytes()
    return found


class DagBuilder:
    """Collects blocks and writes them as a CAR."""

    def __init__(self) -> None:
        self.blocks: dict[Cid, bytes] = {}

    def add(self, codec: int, data: bytes) -> Cid:
        cid = Cid.of_block(codec, data)
        self.blocks[cid] = data
        return cid

    def file(self, content: bytes) -> Cid:
        return self.add(RAW, content)

    def symlink(self, target: str) -> Cid:
        raw = target.encode()
        unixfs = b"\x08\x04\x12" + encode_varint(len(raw)) + raw
        return self.add(DAG_PB, b"\x0a" + encode_varint(len(unixfs)) + unixfs)

    def directory(self, entries: dict[str, Cid]) -> Cid:
        links = [PBLink(cid, name.encode(), len(self.blocks[cid])) for name, cid in entries.items()]
        return self.add(DAG_PB, encode_directory(links))

    def car(self, root: Cid) -> io.BytesIO:
        out = io.BytesIO()
        write_car(out, [root], self.blocks.items())
        out.seek(0)
        return out
