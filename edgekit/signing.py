"""Package signatures: an Ed25519 key (the `cryptography` library) signs the manifest's bytes, and the manifest lists
every other file with its sha256, so one signature covers the package. It is kept beside the manifest as
signature.json; checking it needs the signer's public key, which the user trusts (there is no key server)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import UserError
from edgekit.package import MANIFEST, SIGNATURE, Package, read_package

SIGNATURE_FORMAT = "edgekit-signature/1"
DOMAIN = b"edgekit package manifest sha256 "  # what is signed: this prefix and the manifest's hex sha256


@dataclass(frozen=True, slots=True)
class Signature:
    """signature.json: which key signed which manifest."""

    key: str  # sha256 fingerprint of the raw public key
    manifest_sha256: str
    signature: bytes


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise UserError("signing and checking signatures needs the cryptography package: "
                        "pip install 'edgekit[sign]'") from None
    return serialization, ed25519


def fingerprint(public_key) -> str:
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate_keys(stem: Path) -> tuple[Path, Path]:
    """A new key pair: `<stem>.key` (private, PEM, readable by the owner only) and `<stem>.pub` (PEM). Refuses to
    overwrite either."""
    serialization, ed25519 = _crypto()
    private_path, public_path = stem.with_name(stem.name + ".key"), stem.with_name(stem.name + ".pub")
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise UserError(f"{path} exists; edgekit keygen never overwrites a key")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(private_pem)
        public_path.write_bytes(public_pem)
    except OSError as error:
        raise UserError(f"cannot write {stem}.key/.pub: {error.strerror or error}") from None
    return private_path, public_path


def _private_key(path: Path):
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as error:
        raise UserError(f"cannot read key {path}: {error.strerror or error}") from None
    except TypeError:
        raise UserError(f"{path} is encrypted; edgekit sign takes an unencrypted Ed25519 key") from None
    except ValueError:
        raise UserError(f"{path} is not a PEM private key (make one with `edgekit keygen NAME`)") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise UserError(f"{path} is a {type(key).__name__.removeprefix('_')}; edgekit signs with Ed25519 keys")
    return key


def public_key(path: str | Path):
    """An Ed25519 public key from a PEM file (what `edgekit keygen` writes as NAME.pub)."""
    serialization, ed25519 = _crypto()
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as error:
        raise UserError(f"cannot read key {path}: {error.strerror or error}") from None
    except ValueError:
        raise UserError(f"{path} is not a PEM public key (`edgekit keygen NAME` writes NAME.pub)") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise UserError(f"{path} is not an Ed25519 public key")
    return key


def _message(manifest_sha256: str) -> bytes:
    return DOMAIN + manifest_sha256.encode()


def sign_package(path: str | Path, key_path: str | Path) -> str:
    """Sign the package at `path` (a folder, or a .zip rewritten whole) with the private key; returns the key's
    fingerprint. The package must verify first: a signature vouches for files that match their manifest."""
    path, key = Path(path), _private_key(Path(key_path))
    package = read_package(path)
    manifest_bytes = (package.root / MANIFEST).read_bytes()
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    record = {"format": SIGNATURE_FORMAT, "algorithm": "ed25519", "key": fingerprint(key.public_key()),
              "manifest_sha256": digest, "signature": base64.b64encode(key.sign(_message(digest))).decode()}
    text = json.dumps(record, indent=2) + "\n"
    partial = path.with_name(f".{path.name}.signing-{os.getpid()}")
    try:
        if path.is_dir():
            partial.write_text(text)
            os.replace(partial, path / SIGNATURE)
        else:
            _rewrite_zip(path, partial, text)
    except OSError as error:
        raise UserError(f"cannot write the signature into {path}: {error.strerror or error}") from None
    finally:
        partial.unlink(missing_ok=True)
    return record["key"]


def _rewrite_zip(archive: Path, partial: Path, signature: str) -> None:
    """The archive with its signature.json replaced, written beside it and renamed over it."""
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename != SIGNATURE:
                target.writestr(info, source.read(info))
        target.writestr(SIGNATURE, signature)
    os.replace(partial, archive)


def read_signature(package: Package) -> Signature | None:
    """The package's signature record, or None when it is unsigned; a malformed record is refused."""
    path = package.root / SIGNATURE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record.get("format") != SIGNATURE_FORMAT or record.get("algorithm") != "ed25519":
            raise ValueError(f"format {record.get('format')!r}, algorithm {record.get('algorithm')!r}")
        return Signature(str(record["key"]), str(record["manifest_sha256"]),
                         base64.b64decode(record["signature"], validate=True))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
        raise UserError(f"package {package.name}: {SIGNATURE} is malformed ({error})") from None


def check_signature(package: Package, trusted_keys: Sequence[str | Path]) -> str:
    """The fingerprint of the trusted key that signed this package's manifest; refuses an unsigned package, one signed
    by another key, or one whose manifest changed since it was signed. The caller has verified the files' hashes."""
    _crypto()
    from cryptography.exceptions import InvalidSignature

    if not trusted_keys:
        raise UserError("no trusted keys given: name the public key(s) whose signature you accept")
    keys = {fingerprint(key): key for key in map(public_key, trusted_keys)}
    signature = read_signature(package)
    if signature is None:
        raise UserError(f"package {package.name} is not signed; refused (a trusted key was required)")
    key = keys.get(signature.key)
    if key is None:
        raise UserError(f"package {package.name} is signed by key {signature.key[:16]}, which is not among the trusted "
                        "keys; refused")
    digest = hashlib.sha256((package.root / MANIFEST).read_bytes()).hexdigest()
    try:
        if digest != signature.manifest_sha256:
            raise InvalidSignature
        key.verify(signature.signature, _message(digest))
    except InvalidSignature:
        raise UserError(f"package {package.name}: the signature does not match its manifest (changed since it was "
                        "signed, or a forged signature); refused") from None
    return signature.key
