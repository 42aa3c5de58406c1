"""Signed packages (edgekit keygen/sign/verify, load(trusted_keys=…)), the golden self-test `verify` runs, .zip
packages unpacked once into a folder named by their hash, and `edgekit cache info|verify|prune`."""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.digest import file_sha256
from edgekit.errors import UserError
from edgekit.package import UNPACKED_KEPT, read_package
from edgekit.runtime import load


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    for name in ("alice", "mallory"):
        code, stdout, stderr = invoke("keygen", folder / name)
        assert code == 0, stderr
    return {"alice": folder / "alice.key", "alice.pub": folder / "alice.pub", "mallory": folder / "mallory.key",
            "mallory.pub": folder / "mallory.pub"}


def _rehash(package: Path, name: str) -> None:
    """Record `name`'s current sha256 in the manifest, as someone rewriting a package would."""
    manifest = json.loads((package / "manifest.json").read_text())
    for entry in [*manifest["files"], manifest["golden"]["file"]]:
        if entry["path"] == name:
            entry.update(sha256=file_sha256(package / name), bytes=(package / name).stat().st_size)
    (package / "manifest.json").write_text(json.dumps(manifest))


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(keys):
    assert keys["alice"].stat().st_mode & 0o777 == 0o600
    assert keys["alice.pub"].read_text().startswith("-----BEGIN PUBLIC KEY-----")
    code, _, stderr = invoke("keygen", keys["alice"].with_suffix(""))
    assert code == 1 and "exists; edgekit keygen never overwrites a key" in stderr and "Traceback" not in stderr


def test_a_signed_package_loads_only_under_its_key_and_unchanged(cnn_package, keys, tmp_path):
    package = tmp_path / "pkg"
    shutil.copytree(cnn_package, package)
    with pytest.raises(UserError, match=r"is not signed; refused"):
        load(package, trusted_keys=[keys["alice.pub"]])
    code, stdout, stderr = invoke("sign", package, "--key", keys["alice"])
    assert code == 0, stderr
    signature = json.loads((package / "signature.json").read_text())
    assert stdout.strip() == f"signed {package} with key {signature['key'][:16]}"

    assert load(package, trusted_keys=[keys["mallory.pub"], keys["alice.pub"]]).runtime == "onnxruntime"
    with pytest.raises(UserError, match=r"signed by key \w{16}, which is not among the trusted keys"):
        load(package, trusted_keys=[keys["mallory.pub"]])
    code, stdout, _ = invoke("verify", package, "--key", keys["alice.pub"])
    assert code == 0 and f"signature: valid, by trusted key {signature['key'][:16]}" in stdout

    # the model swapped and its new hash written into the manifest: the files verify, the signature does not
    model = package / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    _rehash(package, "model.onnx")
    with pytest.raises(UserError, match=r"the signature does not match its manifest"):
        load(package, trusted_keys=[keys["alice.pub"]])
    code, _, stderr = invoke("verify", package, "--key", keys["alice.pub"])
    assert code == 1 and stderr.count("\n") == 1 and "does not match its manifest" in stderr

    # mallory re-signs the changed package: still not alice's
    invoke("sign", package, "--key", keys["mallory"])
    with pytest.raises(UserError, match=r"which is not among the trusted keys"):
        load(package, trusted_keys=[keys["alice.pub"]])
    # a signature record claiming alice's key over mallory's signature bytes
    forged = {**json.loads((package / "signature.json").read_text()), "key": signature["key"]}
    (package / "signature.json").write_text(json.dumps(forged))
    with pytest.raises(UserError, match=r"the signature does not match its manifest"):
        load(package, trusted_keys=[keys["alice.pub"]])
    (package / "signature.json").write_text("{not json")
    with pytest.raises(UserError, match=r"signature.json is malformed"):
        load(package, trusted_keys=[keys["alice.pub"]])


def test_a_signed_zip_package(cnn_package, keys, tmp_path):
    archive = tmp_path / "cnn.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(cnn_package.iterdir()):
            zipped.write(path, path.name)
    unsigned_hash = file_sha256(archive)
    assert invoke("sign", archive, "--key", keys["mallory"])[0] == 0
    assert invoke("sign", archive, "--key", keys["alice"])[0] == 0  # signing again replaces the signature
    names = zipfile.ZipFile(archive).namelist()
    assert names.count("signature.json") == 1 and file_sha256(archive) != unsigned_hash
    session = load(archive, trusted_keys=[keys["alice.pub"]])
    assert session.package.name == archive and session.package.root.name == file_sha256(archive)
    assert not list(tmp_path.glob(".cnn.zip.signing-*"))


def test_sign_refuses_a_package_that_does_not_verify_and_a_wrong_key(cnn_package, keys, tmp_path):
    package = tmp_path / "pkg"
    shutil.copytree(cnn_package, package)
    code, _, stderr = invoke("sign", package, "--key", keys["alice.pub"])
    assert code == 1 and "is not a PEM private key" in stderr
    (package / "model.onnx").write_bytes(b"changed")
    code, _, stderr = invoke("sign", package, "--key", keys["alice"])
    assert code == 1 and "model.onnx does not match its sha256" in stderr and not (package / "signature.json").exists()


def test_verify_runs_the_golden_self_test_and_fails_on_wrong_outputs(cnn_package, tmp_path):
    package = tmp_path / "pkg"
    shutil.copytree(cnn_package, package)
    code, stdout, stderr = invoke("verify", package)
    assert code == 0, stderr
    assert "signature: none (unsigned)" in stdout and "self-test: 4 samples" in stdout and stdout.rstrip().endswith("ok")
    report = json.loads(invoke("verify", package, "--json")[1])
    assert report["ok"] and report["golden"]["worst"]["max_rel"] <= 1e-3 and report["golden"]["precision"] == "fp32"

    # outputs recorded 2% off: a float package must match within 1e-3 of the output range
    golden = package / "golden.npz"
    with np.load(golden) as stored:
        arrays = {name: stored[name] for name in stored.files}
    arrays["s0_out0"] = arrays["s0_out0"] * 1.02 + 0.01
    np.savez(golden, **arrays)
    _rehash(package, "golden.npz")
    code, stdout, _ = invoke("verify", package)
    assert code == 1 and "self-test: 4 samples" in stdout and stdout.rstrip().endswith("FAILED")
    assert invoke("verify", package, "--no-self-test")[0] == 0


def test_golden_samples_are_never_unpickled(cnn_package, tmp_path):
    package = tmp_path / "pkg"
    shutil.copytree(cnn_package, package)
    marker = tmp_path / "marker"
    np.savez(package / "golden.npz", s0_in0=np.array([_Evil(marker)], dtype=object))
    _rehash(package, "golden.npz")
    code, _, stderr = invoke("verify", package)
    assert code == 1 and "holds no self-test samples for this model" in stderr and not marker.exists()


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def _zip_of(package: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(package.iterdir()):
            zipped.write(path, path.name)
    return archive


def test_a_zip_package_is_unpacked_once_and_a_changed_copy_is_unpacked_again(cnn_package, tmp_path):
    archive, root = _zip_of(cnn_package, tmp_path / "cnn.zip"), tmp_path / "unpacked"
    folders = {read_package(archive, unpack_root=root).root for _ in range(20)}
    assert folders == {root / file_sha256(archive)} and len(list(root.iterdir())) == 1
    folder = folders.pop()
    (folder / "model.onnx").write_bytes(b"changed in the unpacked copy")
    assert file_sha256(read_package(archive, unpack_root=root).root / "model.onnx") == \
        file_sha256(cnn_package / "model.onnx")
    (folder / "extra.onnx").write_bytes(b"planted")
    read_package(archive, unpack_root=root)
    assert not (folder / "extra.onnx").exists()

    not_a_package = tmp_path / "readme.zip"
    with zipfile.ZipFile(not_a_package, "w") as zipped:
        zipped.writestr("readme.txt", "no manifest")
    with pytest.raises(UserError, match=r"readme.zip is not an edgekit package \(no manifest.json\)"):
        read_package(not_a_package, unpack_root=root)
    assert len(list(root.iterdir())) == 1


def test_unpacked_archives_beyond_the_kept_count_are_pruned_once_unused(cnn_package, tmp_path):
    root = tmp_path / "unpacked"
    root.mkdir()
    stale = []
    for index in range(UNPACKED_KEPT + 4):
        folder = root / f"{index:064x}"
        folder.mkdir()
        age = 7200 + index  # over the hour's grace, the higher index the older
        os.utime(folder, (time.time() - age, time.time() - age))
        stale.append(folder)
    read_package(_zip_of(cnn_package, tmp_path / "cnn.zip"), unpack_root=root)
    kept = sorted(p.name for p in root.iterdir())
    assert len(kept) == UNPACKED_KEPT and stale[-1].name not in kept and stale[0].name in kept


def test_cache_info_verify_prune(cnn_source, cnn_data, tmp_path):
    from conftest import CNN_INPUT

    cache = tmp_path / "cache"
    code, _, stderr = invoke("compile", cnn_source, "-t", "cpu-ort", "-r", "fp32", "--calib", cnn_data, "--eval",
                             cnn_data, "--input", CNN_INPUT, "-o", tmp_path / "pkg", "--cache-dir", cache,
                             "--bench-runs", 2)
    assert code == 0, stderr
    areas = {a["name"]: a for a in json.loads(invoke("cache", "--cache-dir", cache, "info", "--json")[1])}
    entries = sorted(p for p in cache.iterdir() if len(p.name) == 64)
    assert areas["steps"]["entries"] == len(entries) == 2 and areas["steps"]["bytes"] > 1000
    model = next(p for p in entries[0].iterdir() if p.name != "model.json")
    model.write_bytes(b"bit rot")
    code, stdout, stderr = invoke("cache", "--cache-dir", cache, "verify")
    assert code == 0 and "1 entries intact, 1 corrupt removed" in stdout and "does not match its sha256" in stderr
    assert not entries[0].exists() and entries[1].exists()
    code, _, stderr = invoke("cache", "--cache-dir", cache, "prune")
    assert code == 1 and "give --older-than DAYS or --all" in stderr
    assert invoke("cache", "--cache-dir", cache, "prune", "--older-than", 1)[0] == 0 and entries[1].exists()
    os.utime(entries[1], (time.time() - 3 * 86400, time.time() - 3 * 86400))
    code, stdout, _ = invoke("cache", "--cache-dir", cache, "prune", "--older-than", 1)
    assert code == 0 and stdout.startswith("removed 1 cached entries") and not entries[1].exists()
