"""`edgekit verify`: a package's files against its manifest, its signature against the keys the user trusts, and its
golden self-test run here, on the device it is deployed to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgekit.golden import GoldenResult
from edgekit.package import read_package


@dataclass(frozen=True, slots=True)
class Verification:
    """What `verify_package` found; `ok` is whether every check that ran passed."""

    package: str
    files: int  # listed files whose sha256 matched
    signed_by: str | None  # fingerprint of the signing key (checked against a trusted key when keys were given)
    signature_checked: bool
    golden: GoldenResult | None
    golden_skipped: str | None  # why the self-test did not run

    @property
    def ok(self) -> bool:
        return self.golden is None or self.golden.ok


def verify_package(path: str | Path, trusted_keys: Sequence[str | Path] = (), threads: int | None = None,
                   self_test: bool = True) -> Verification:
    """Check the package's files (always), its signature (against `trusted_keys` when given: an unsigned or
    differently signed package is refused) and run its golden self-test (when it has one and its runtime is here)."""
    from edgekit.runtime import backend_module, open_package
    from edgekit.signing import check_signature, read_signature

    package = read_package(path)
    if trusted_keys:
        signed_by, checked = check_signature(package, trusted_keys), True
    else:
        signature = read_signature(package)
        signed_by, checked = (signature.key if signature else None), False
    golden, skipped = None, None
    if not self_test:
        skipped = "not asked (--no-self-test)"
    elif package.manifest.golden is None:
        skipped = "the package holds no self-test samples (its target could not run where it was built)"
    else:
        skipped = backend_module(package.runtime).probe(package.manifest.target.options)
        if skipped is None:
            golden = open_package(package, threads).self_test()
    return Verification(str(path), len(package.manifest.entries), signed_by, checked, golden, skipped)
