#!/usr/bin/env python3
"""Build the example jobs in ``examples/wasm/`` to Wasm (and natively).

Each ``examples/wasm/NAME.c`` becomes ``examples/wasm/build/NAME.wasm`` (a
WASI command module, built with Debian clang for ``wasm32-wasi``) and
``examples/wasm/build/native/NAME`` (the same source for this machine, used
by ``bench/executors.py`` as the native baseline). A target newer than its
sources is left alone, so running the script twice is cheap.

Needs Debian's ``clang lld wasi-libc libclang-rt-14-dev-wasm32``.

Usage::

    python scripts/build_examples.py            # build what is out of date
    python scripts/build_examples.py --force    # rebuild everything
    python scripts/build_examples.py --wasm-only
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIR = ROOT / "examples" / "wasm"
BUILD_DIR = SOURCE_DIR / "build"
NATIVE_DIR = BUILD_DIR / "native"

WASM_FLAGS = ("--target=wasm32-wasi", "-O2", "-Wall", "-Wextra", "-Wl,--strip-all")
NATIVE_FLAGS = ("-O2", "-Wall", "-Wextra", "-DNATIVE")
INSTALL_HINT = "Install it with: apt-get install -y clang lld wasi-libc libclang-rt-14-dev-wasm32"


class BuildError(Exception):
    """A compiler is missing or a source does not compile."""


def _newest_dependency(source: Path) -> float:
    headers = SOURCE_DIR.glob("*.h")
    return max(p.stat().st_mtime for p in (source, Path(__file__), *headers))


def _up_to_date(target: Path, source: Path) -> bool:
    return target.exists() and target.stat().st_mtime >= _newest_dependency(source)


def _compile(clang: str, flags: Sequence[str], source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename, so a concurrent reader (another
    # test session) never sees a half-written module.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        proc = subprocess.run(
            [clang, *flags, "-o", str(tmp), str(source)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BuildError(f"{source.name} does not compile ({' '.join(flags)}):\n{proc.stderr.strip()}")
        tmp.chmod(0o755)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def build(*, force: bool = False, native: bool = True, quiet: bool = False) -> dict[str, Path]:
    """Build every example that is out of date.

    Args:
        force: Rebuild even when the targets are newer than the sources.
        native: Also build the native binaries used by the benchmark.
        quiet: Print nothing when everything is up to date.

    Returns:
        Example name to its ``.wasm`` module path.

    Raises:
        BuildError: clang is missing or a source does not compile.
    """
    clang = shutil.which("clang")
    if clang is None:
        raise BuildError(f"clang is not on PATH. {INSTALL_HINT}")
    modules: dict[str, Path] = {}
    for source in sorted(SOURCE_DIR.glob("*.c")):
        name = source.stem
        jobs: list[tuple[Sequence[str], Path]] = [(WASM_FLAGS, BUILD_DIR / f"{name}.wasm")]
        if native:
            jobs.append((NATIVE_FLAGS, NATIVE_DIR / name))
        for flags, target in jobs:
            if not force and _up_to_date(target, source):
                continue
            _compile(clang, flags, source, target)
            if not quiet:
                print(f"built {target.relative_to(ROOT)}")
        modules[name] = BUILD_DIR / f"{name}.wasm"
    return modules


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild everything")
    parser.add_argument("--wasm-only", action="store_true", help="skip the native builds")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    args = parser.parse_args(argv)
    try:
        modules = build(force=args.force, native=not args.wasm_only, quiet=args.quiet)
    except BuildError as exc:
        print(f"build_examples: {exc}", file=sys.stderr)
        if "wasi" in str(exc).lower() or "wasm" in str(exc).lower():
            print(f"build_examples: is the WASI sysroot installed? {INSTALL_HINT}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"{len(modules)} examples up to date in {BUILD_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
