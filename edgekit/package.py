"""Packages: a folder with manifest.json and the model files, written atomically, verified on read."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgekit.digest import file_sha256
from edgekit.errors import UserError
from edgekit.manifest import FileEntry, Manifest
from edgekit.scratch import owned_scratch

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Package:
    """A package on disk: its root folder and checked manifest."""

    root: Path
    manifest: Manifest

    @property
    def files(self) -> tuple[Path, ...]:
        """The listed files, in order (the main model file first); read_package has checked they lie inside."""
        return tuple(self.root / entry.path for entry in self.manifest.files)

    @property
    def main_file(self) -> Path:
        return self.files[0]

    @property
    def runtime(self) -> str:
        return self.manifest.runtime

    def verify(self) -> None:
        """Every listed file exists with its recorded sha256; raises UserError naming the first that differs."""
        for entry, path in zip(self.manifest.files, self.files):
            if not path.is_file():
                raise UserError(f"package {self.root}: file {entry.path} is missing")
            if file_sha256(path) != entry.sha256:
                raise UserError(f"package {self.root}: {entry.path} does not match its sha256 (modified or corrupt)")

    def check_contents(self) -> None:
        """The folder holds the manifest and the files it lists, nothing else, no links and no path out of it: a
        runtime opening a file the manifest does not list and hash (ONNX external data, say) is refused here."""
        listed = set()
        for entry in self.manifest.files:
            relative = PurePosixPath(entry.path)
            if relative.is_absolute() or not relative.parts or ".." in relative.parts or "\\" in entry.path:
                raise UserError(f"package {self.root}: file path {entry.path!r} leaves the package")
            listed.add(relative.as_posix())
        for path in sorted(self.root.rglob("*")):
            name = path.relative_to(self.root).as_posix()
            if path.is_symlink():
                raise UserError(f"package {self.root}: {name} is a link; a package holds its own files")
            if path.is_file() and name != MANIFEST and name not in listed:
                raise UserError(f"package {self.root}: {name} is not listed in the manifest; a package holds only the "
                                "files its manifest lists and hashes")


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
    package.check_contents()
    if verify:
        package.verify()
    return package


# a package .zip is checked before anything is extracted: total size and compression ratio (a zip bomb), and names
UNZIPPED_LIMIT = 8 * 2**30  # bytes
RATIO_LIMIT = 200  # expanded / compressed, per entry (model weights compress 1-5x; 512 MiB of zeros ~1000x)


def _unzip(archive: Path) -> Path:
    with zipfile.ZipFile(archive) as zipped:
        entries = zipped.infolist()
        names = [entry.filename for entry in entries]
        for name in names:
            if name.startswith("/") or ".." in Path(name).parts:
                raise UserError(f"{archive}: unsafe path {name} in the archive")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise UserError(f"{archive}: {', '.join(repeated)} appear more than once in the archive")
        if sum(entry.file_size for entry in entries) > UNZIPPED_LIMIT:
            raise UserError(f"{archive}: expands to more than {UNZIPPED_LIMIT / 2**30:.0f} GiB; not a package to unpack")
        bombs = [e.filename for e in entries if e.file_size > 2**20 and e.file_size > RATIO_LIMIT * max(e.compress_size, 1)]
        if bombs:
            raise UserError(f"{archive}: {bombs[0]} expands over {RATIO_LIMIT}x its compressed size; not a package to unpack")
        folder = owned_scratch(tempfile.gettempdir(), "edgekit-pkg-")
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
        refusal = self._why_not_replaceable() if self.out.exists() or self.out.is_symlink() else None
        if refusal:
            raise UserError(f"{self.out} exists and is not an intact edgekit package ({refusal}); nothing was "
                            "changed: choose another -o")
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.root = owned_scratch(self.out.parent, f".{self.out.name}.partial-")
        except OSError as error:
            raise UserError(f"cannot write {self.out}: {error.strerror or error}") from None

    def _why_not_replaceable(self) -> str | None:
        """None when `out` may be replaced: an empty folder, or a package that verifies with nothing unlisted in it."""
        if self.out.is_symlink():
            return "a link"
        if self.out.is_dir() and not any(self.out.iterdir()):
            return None
        if self.out.is_file() and not (self.zip and zipfile.is_zipfile(self.out)):
            return "a file that is not a package .zip"
        try:
            read_package(self.out)
        except UserError as error:
            return str(error).removeprefix(f"package {self.out}: ")
        return None

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
