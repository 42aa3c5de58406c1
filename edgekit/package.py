"""Packages: a folder with manifest.json and the model files, written atomically, verified on read. A .zip package
is checked before extraction and unpacked once into a folder named by its sha256 (reused, and pruned)."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgekit.digest import file_sha256
from edgekit.errors import UserError
from edgekit.manifest import FileEntry, Manifest
from edgekit.scratch import owned_scratch

MANIFEST = "manifest.json"
SIGNATURE = "signature.json"  # written by `edgekit sign` beside the manifest it signs (edgekit.signing)


@dataclass(frozen=True)
class Package:
    """A package on disk: its root folder (a .zip's unpacked copy), checked manifest, and the path it was opened by."""

    root: Path
    manifest: Manifest
    origin: Path | None = None  # the .zip, for messages; None: the root itself

    @property
    def name(self) -> Path:
        """The path the user gave: the folder or the .zip."""
        return self.origin or self.root

    @property
    def files(self) -> tuple[Path, ...]:
        """The listed model files, in order (the main model file first); read_package has checked they lie inside."""
        return tuple(self.root / entry.path for entry in self.manifest.files)

    @property
    def main_file(self) -> Path:
        return self.files[0]

    @property
    def runtime(self) -> str:
        return self.manifest.runtime

    def verify(self) -> None:
        """Every listed file exists with its recorded sha256; raises UserError naming the first that differs."""
        for entry in self.manifest.entries:
            path = self.root / entry.path
            if not path.is_file():
                raise UserError(f"package {self.name}: file {entry.path} is missing")
            if file_sha256(path) != entry.sha256:
                raise UserError(f"package {self.name}: {entry.path} does not match its sha256 (modified or corrupt)")

    def check_contents(self) -> None:
        """The folder holds the manifest, the files it lists and perhaps a signature, nothing else, no links and no
        path out of it: a runtime opening a file the manifest does not list and hash (ONNX external data) is refused."""
        listed = {SIGNATURE}
        for entry in self.manifest.entries:
            relative = PurePosixPath(entry.path)
            if relative.is_absolute() or not relative.parts or ".." in relative.parts or "\\" in entry.path:
                raise UserError(f"package {self.name}: file path {entry.path!r} leaves the package")
            listed.add(relative.as_posix())
        for path in sorted(self.root.rglob("*")):
            name = path.relative_to(self.root).as_posix()
            if path.is_symlink():
                raise UserError(f"package {self.name}: {name} is a link; a package holds its own files")
            if path.is_file() and name != MANIFEST and name not in listed:
                raise UserError(f"package {self.name}: {name} is not listed in the manifest; a package holds only the "
                                "files its manifest lists and hashes")


def read_package(path: str | Path, verify: bool = True, unpack_root: Path | None = None) -> Package:
    """Open a package folder, or a .zip of one unpacked into `unpack_root` (default: `unpack_root()`)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"package not found: {path}")
    if not (path.is_file() and zipfile.is_zipfile(path)):
        return _read_folder(path, verify)
    root = unpack_root or default_unpack_root()
    folder, reused = unpacked(path, root)
    if reused:
        try:
            return _read_folder(folder, verify, path)
        except UserError:  # the unpacked copy was changed since: unpack the archive again
            shutil.rmtree(folder, ignore_errors=True)
            folder, _ = unpacked(path, root)
    return _read_folder(folder, verify, path)


def _read_folder(path: Path, verify: bool, origin: Path | None = None) -> Package:
    manifest_path = path / MANIFEST
    if manifest_path.is_symlink():
        raise UserError(f"package {origin or path}: {MANIFEST} is a link; a package holds its own files")
    if not manifest_path.is_file():
        raise UserError(f"{origin or path} is not an edgekit package (no {MANIFEST})")
    try:
        raw = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"package {origin or path}: corrupt manifest: {error}") from None
    except RecursionError:
        raise UserError(f"package {origin or path}: corrupt manifest: nested too deeply") from None
    package = Package(path, Manifest.from_dict(raw, f"package {origin or path}"), origin)
    package.check_contents()
    if verify:
        package.verify()
    return package


# a package .zip is checked before anything is extracted: total size and compression ratio (a zip bomb), and names
UNZIPPED_LIMIT = 8 * 2**30  # bytes
RATIO_LIMIT = 200  # expanded / compressed, per entry (model weights compress 1-5x; 512 MiB of zeros ~1000x)


UNPACKED_KEPT = 16  # unpacked archives kept; older ones are removed once unused for UNPACKED_GRACE seconds
UNPACKED_GRACE = 3600


def default_unpack_root() -> Path:
    """This user's folder of unpacked package archives, under the temporary folder, private to the user."""
    owner = os.getuid() if hasattr(os, "getuid") else None
    root = Path(tempfile.gettempdir()) / f"edgekit-packages-{owner if owner is not None else 'user'}"
    root.mkdir(mode=0o700, exist_ok=True)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or (owner is not None and info.st_uid != owner) or info.st_mode & 0o077:
        raise UserError(f"{root} is not a private folder of this user; remove it (edgekit unpacks packages there)")
    return root


def unpacked(archive: Path, root: Path) -> tuple[Path, bool]:
    """The folder `<root>/<sha256 of the archive>` holding the archive's files, and whether it was there already:
    reused when it holds the archive's names with its manifest byte for byte (the reader checks the model files'
    hashes), else extracted after the archive's checks."""
    with open(archive, "rb") as stream:  # hashed and read through one handle: a file swapped meanwhile is not mixed in
        digest = hashlib.file_digest(stream, "sha256").hexdigest()
        stream.seek(0)
        try:
            with zipfile.ZipFile(stream) as zipped:
                entry = root / digest
                if _holds(entry, zipped):
                    os.utime(entry)
                    return entry, True
                shutil.rmtree(entry, ignore_errors=True)
                partial = _unzip(archive, zipped, root, digest)
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:  # a bad CRC, deflate stream or truncated member
            raise UserError(f"{archive}: corrupt archive: {error}") from None
        except NotImplementedError as error:  # a compression method or zip version Python's zipfile cannot read
            raise UserError(f"{archive}: unsupported archive ({error}); write it with plain deflate") from None
    try:
        partial.rename(entry)
    except OSError:  # another process unpacked the same archive first: use that one
        shutil.rmtree(partial, ignore_errors=True)
    _prune_unpacked(root, keep=entry)
    return entry, False


def _holds(folder: Path, zipped: zipfile.ZipFile) -> bool:
    """Whether `folder` holds the archive's files and no other, with its manifest and signature byte for byte."""
    if not folder.is_dir():
        return False
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}
    names = {info.filename for info in zipped.infolist() if not info.is_dir()}
    if present != names:
        return False
    return all((folder / name).read_bytes() == zipped.read(name) for name in (MANIFEST, SIGNATURE) if name in names)


def _unzip(archive: Path, zipped: zipfile.ZipFile, root: Path, digest: str) -> Path:
    entries = zipped.infolist()
    names = [entry.filename for entry in entries]
    for name in names:
        if name.startswith("/") or "\\" in name or ".." in PurePosixPath(name).parts:
            raise UserError(f"{archive}: unsafe path {name} in the archive")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"{archive}: {', '.join(repeated)} appear more than once in the archive")
    files = {name for name in names if not name.endswith("/")}
    folders = {parent.as_posix() for name in names for parent in PurePosixPath(name.rstrip("/")).parents} | {
        name.rstrip("/") for name in names if name.endswith("/")}
    both = sorted(files & folders)
    if both:
        raise UserError(f"{archive}: {both[0]} is both a file and a folder in the archive")
    if MANIFEST not in names:
        raise UserError(f"{archive} is not an edgekit package (no {MANIFEST})")
    if sum(entry.file_size for entry in entries) > UNZIPPED_LIMIT:
        raise UserError(f"{archive}: expands to more than {UNZIPPED_LIMIT / 2**30:.0f} GiB; not a package to unpack")
    bombs = [e.filename for e in entries if e.file_size > 2**20 and e.file_size > RATIO_LIMIT * max(e.compress_size, 1)]
    if bombs:
        raise UserError(f"{archive}: {bombs[0]} expands over {RATIO_LIMIT}x its compressed size; not a package to unpack")
    folder = owned_scratch(root, f"{digest}.partial-")
    try:
        zipped.extractall(folder)
    except OSError as error:  # a name the file system refuses (too long, say), or a full disk
        shutil.rmtree(folder, ignore_errors=True)
        raise UserError(f"{archive}: cannot unpack it: {error.strerror or error}") from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _prune_unpacked(root: Path, keep: Path) -> None:
    """Remove unpacked archives beyond the UNPACKED_KEPT most recently used, once unused for UNPACKED_GRACE."""
    folders = sorted((p for p in root.iterdir() if p.is_dir() and len(p.name) == 64), key=lambda p: p.stat().st_mtime,
                     reverse=True)
    for folder in folders[UNPACKED_KEPT:]:
        if folder != keep and time.time() - folder.stat().st_mtime > UNPACKED_GRACE:
            shutil.rmtree(folder, ignore_errors=True)


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
        if self.out.name in ("", "..") or self.out.resolve() == Path.cwd():
            raise UserError(f"-o {out} names a folder by a relative step or the current folder; give the package a "
                            "path of its own (a new or empty folder, or NAME.zip)")
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
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.with_name(f"{self.root.name}.zip").unlink(missing_ok=True)

    def write_manifest(self, manifest: Manifest) -> None:
        (self.root / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n")

    def commit(self) -> Path:
        """Move the package into place in one step: `out` holds the old package or the new one at every moment."""
        if self.zip:  # beside the staging folder, under its owned name (the next run removes a killed run's)
            partial = self.root.with_name(f"{self.root.name}.zip")
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zipped:
                for path in sorted(self.root.rglob("*")):
                    zipped.write(path, path.relative_to(self.root).as_posix())
            self._check_replaceable()  # another process may have written `out` since we looked
            os.replace(partial, self.out)
            return self.out
        if not self.out.exists():
            try:
                os.rename(self.root, self.out)
                return self.out
            except OSError as error:  # another process created `out` meanwhile: replace it if it is a package
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise UserError(f"cannot write {self.out}: {error.strerror or error}") from None
        self._check_replaceable()
        _exchange(self.root, self.out)  # the old package is now at self.root, removed with it
        return self.out

    def _check_replaceable(self) -> None:
        refusal = self._why_not_replaceable() if self.out.exists() or self.out.is_symlink() else None
        if refusal:
            raise UserError(f"{self.out} was written by someone else while this compile ran and is not an intact "
                            f"edgekit package ({refusal}); nothing was changed: choose another -o")


def _exchange(new: Path, old: Path) -> None:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE); where the system cannot, rename the old one
    aside and the new one in (a kill between the two leaves the old package at `.NAME.replaced-PID`, kept)."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_cwd, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
        if renameat2(at_cwd, os.fsencode(new), at_cwd, os.fsencode(old), exchange) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise UserError(f"cannot replace {old}: {os.strerror(code)}")
    aside = old.with_name(f".{old.name}.replaced-{os.getpid()}")
    os.rename(old, aside)
    os.rename(new, old)
    os.rename(aside, new)
