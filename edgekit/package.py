"""Packages: a folder with manifest.json and the model files, written atomically, verified on read."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgekit.digest import file_sha256
from edgekit.errors import UserError
from edgekit.manifest import FileEntry, Manifest

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Package:
    """A package on disk: its root folder and checked manifest."""

    root: Path
    manifest: Manifest

    @property
    def main_file(self) -> Path:
        return self.root / self.manifest.files[0].path

    @property
    def runtime(self) -> str:
        return self.manifest.runtime

    def verify(self) -> None:
        """Every listed file exists with its recorded sha256; raises UserError naming the first that differs."""
        for entry in self.manifest.files:
            path = self.root / entry.path
            if not path.is_file():
                raise UserError(f"package {self.root}: file {entry.path} is missing")
            if file_sha256(path) != entry.sha256:
                raise UserError(f"package {self.root}: {entry.path} does not match its sha256 (modified or corrupt)")


def read_package(path: str | Path, verify: bool = True) -> Package:
    """Open a package folder (or a .zip of one, unpacked to a temporary folder that is removed when the Package is
    garbage-collected, or at once when the archive is no valid package)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"package not found: {path}")
    if not (path.is_file() and zipfile.is_zipfile(path)):
        return _read_folder(path, verify)
    unpacked = _unzip(path)
    try:
        package = _read_folder(unpacked, verify)
    except BaseException:
        shutil.rmtree(unpacked, ignore_errors=True)
        raise
    weakref.finalize(package, shutil.rmtree, unpacked, True)
    return package


def _read_folder(path: Path, verify: bool) -> Package:
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise UserError(f"{path} is not an edgekit package (no {MANIFEST})")
    try:
        raw = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{manifest_path}: corrupt manifest: {error}") from None
    package = Package(path, Manifest.from_dict(raw, f"package {path}"))
    if verify:
        package.verify()
    return package


def _unzip(archive: Path) -> Path:
    with zipfile.ZipFile(archive) as zipped:
        for name in zipped.namelist():
            if name.startswith("/") or ".." in Path(name).parts:
                raise UserError(f"{archive}: unsafe path {name} in the archive")
        folder = Path(tempfile.mkdtemp(prefix="edgekit-pkg-"))
        try:
            zipped.extractall(folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    return folder


def file_entries(root: Path, files: list[Path]) -> tuple[FileEntry, ...]:
    """Manifest entries for `files` (already inside `root`), main file first."""
    return tuple(FileEntry(f.relative_to(root).as_posix(), file_sha256(f), f.stat().st_size) for f in files)


class Staging:
    """A hidden folder beside `out` to build a package in; `commit()` moves it into place.

    Leaving the `with` block without commit removes it, so a failed compile leaves nothing.
    An existing `out` is replaced only when it is an edgekit package (or empty).
    """

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.zip = self.out.suffix == ".zip"
        if self.out.exists() and not self._replaceable():
            raise UserError(f"{self.out} exists and is not an edgekit package; choose another -o")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))

    def _replaceable(self) -> bool:
        if self.out.is_dir():
            return (self.out / MANIFEST).is_file() or not any(self.out.iterdir())
        return self.zip and zipfile.is_zipfile(self.out)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)

    def write_manifest(self, manifest: Manifest) -> None:
        (self.root / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n")

    def commit(self) -> Path:
        if self.zip:
            partial = self.out.with_name(f".{self.out.name}.partial")
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zipped:
                for path in sorted(self.root.rglob("*")):
                    zipped.write(path, path.relative_to(self.root).as_posix())
            os.replace(partial, self.out)
            return self.out
        if self.out.exists():
            trash = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, trash)
            os.replace(self.root, self.out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.root, self.out)
        return self.out
