"""Version lock: the runtime installed here against the one a package was built (and measured) with.

A runtime reads files written by its older releases, not always those of its newer ones: an older ONNX Runtime
may not know the opset or contrib operators the package uses, an older OpenVINO the opset of a newer IR, an older
LiteRT a newer operator version, an older ExecuTorch the operators of a newer .pte (its policy promises backward
compatibility only). Those runtimes say which operator they lack when they refuse a file, and many packages still
load, so an older one gets a warning (and the load error, if any, names the cause). A TensorRT engine runs only on
the exact TensorRT release that built it (no version-compatible build here) and fails with an opaque
deserialization error elsewhere, so a different release is refused before the engine is touched.
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass

from edgekit.errors import UserError
from edgekit.manifest import Manifest

log = logging.getLogger("edgekit")
RELEASE = re.compile(r"\d{1,9}(?:\.\d{1,9})*")
LONGEST = 64  # characters of a version string worth reading (a package is someone else's file)


@dataclass(frozen=True, slots=True)
class Rule:
    """How one runtime's installed version must relate to the builder's."""

    distribution: str  # the name edgekit.instruments.library_versions records it under
    module: str  # whose __version__ is the installed version (imported anyway to open the package)
    parts: int | None  # leading release numbers compared (older → warning); None: all must be equal (else refused)


RULES: dict[str, Rule] = {
    "onnxruntime": Rule("onnxruntime", "onnxruntime", 2),
    "openvino": Rule("openvino", "openvino", 2),  # year.release: 2025.1
    "tflite": Rule("ai-edge-litert", "ai_edge_litert", 2),
    "executorch": Rule("executorch", "executorch.version", 2),
    "tensorrt": Rule("tensorrt", "tensorrt", None),
}


def release(version: str) -> tuple[int, ...] | None:
    """The leading release numbers of a version string ('2026.4.1-22982-…' → (2026, 4, 1)), or None."""
    found = RELEASE.match(version.strip()) if len(version) <= LONGEST else None
    return tuple(int(part) for part in found.group().split(".")) if found else None


def built_version(manifest: Manifest) -> str | None:
    """The runtime version the package was built with: the compile's library versions, else its benchmark's."""
    rule = RULES.get(manifest.runtime)
    if rule is None:
        return None
    versions = manifest.provenance.get("versions")
    recorded = versions.get(rule.distribution) if isinstance(versions, dict) else None
    if recorded is None and manifest.metrics is not None:
        recorded = manifest.metrics.bench.conditions.get("runtime_version")
    return recorded if isinstance(recorded, str) and release(recorded) else None


def installed_version(runtime: str) -> str | None:
    """The version of the runtime importable here, or None (not installed: opening the package says so)."""
    rule = RULES.get(runtime)
    if rule is None:
        return None
    try:
        found = getattr(importlib.import_module(rule.module), "__version__", None)
    except ImportError:
        return None
    return str(found) if found is not None and release(str(found)) else None


def version_problem(runtime: str, built: str, installed: str) -> tuple[str, bool] | None:
    """What is wrong with running a package built with `built` on `installed`, and whether that refuses it."""
    rule = RULES[runtime]
    have, want = release(installed), release(built)
    if have is None or want is None:
        return None
    if rule.parts is None:
        if have == want:
            return None
        return (f"built with {rule.distribution} {built}, which is the only release that runs its engine "
                f"(this is {installed}): rebuild it here or install {rule.distribution}=={built}", True)
    if have[:rule.parts] >= want[:rule.parts]:
        return None
    return (f"built with {rule.distribution} {built}, newer than this {installed}, which may not know all it uses: "
            f"install {rule.distribution}>={'.'.join(map(str, want[:rule.parts]))}", False)


def check_runtime_version(manifest: Manifest, where: str) -> str | None:
    """Refuse (UserError) or warn (the `edgekit` logger) when the installed runtime cannot be trusted to open the
    package; the warning's text, for the load error should the runtime then refuse the file."""
    built = built_version(manifest)
    installed = installed_version(manifest.runtime) if built else None
    problem = version_problem(manifest.runtime, built, installed) if built and installed else None
    if problem is None:
        return None
    text, refused = problem
    if refused:
        raise UserError(f"package {where}: {text}")
    log.warning("package %s: %s", where, text)
    return text
