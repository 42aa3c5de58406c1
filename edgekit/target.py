"""Targets: YAML descriptions of a device + runtime + format, and whether this machine can run them."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from edgekit.catalog import builtin_names, read_yaml, resolve
from edgekit.errors import UserError
from edgekit.intent import QuantizeIntent
from edgekit.isa import Isa, resolve_isa
from edgekit.model import Format
from edgekit.passes.base import Step, get_pass
from edgekit.recipe import parse_step
from edgekit.runtime import BACKENDS, backend_module, check_options
from edgekit.schema import build, did_you_mean


@dataclass(frozen=True, slots=True)
class Constraints:
    static_shapes: bool = False
    opset_min: int = 7
    opset_max: int = 23


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    device: str
    runtime: str
    format: Format
    precisions: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    constraints: Constraints = Constraints()
    lowering: tuple[Step, ...] = ()
    # `precision/scheme` → the steps that quantize so here; the last is configured from a recipe's intent
    quantize: dict[str, tuple[Step, ...]] = field(default_factory=dict)
    default_recipe: str = "fp32"
    recipes: dict[str, str] = field(default_factory=dict)  # precision → the recipe that gives it best here
    description: str = ""
    source: str = ""
    isa: str = "host"  # the CPU instruction set its packages are built for; `host`: this machine's

    @property
    def instruction_set(self) -> Isa:
        return resolve_isa(self.isa, f"target {self.name}")

    def with_runtime(self, overrides: dict[str, Any]) -> Target:
        """This target with a recipe's runtime options laid over its own (`config` entries merged key by key)."""
        if not overrides:
            return self
        options = {**self.options, **overrides}
        if isinstance(self.options.get("config"), dict) and isinstance(overrides.get("config"), dict):
            options["config"] = {**self.options["config"], **overrides["config"]}
        check_options(self.runtime, options, f"target {self.name} with a recipe's runtime options")
        return replace(self, options=options)

    def availability(self) -> str | None:
        """None when this machine can run the target, else why not and what would fix it."""
        return backend_module(self.runtime).probe(self.options)

    def to_dict(self) -> dict:
        return {"name": self.name, "device": self.device, "runtime": self.runtime,
                "format": self.format.value, "options": self.options, "source": self.source,
                "isa": self.instruction_set.to_dict() | {"declared": self.isa}}


TARGET_KEYS = ("name", "description", "device", "runtime", "format", "precisions", "options",
               "constraints", "lowering", "quantize", "default_recipe", "recipes", "isa")


def load_target(name_or_path: str | Path) -> Target:
    path = resolve("targets", name_or_path)
    data = read_yaml(path, "targets")
    where = f"target {path}"
    for key in data:
        if key not in TARGET_KEYS:
            raise UserError(f"{where}: unknown field '{key}'{did_you_mean(key, TARGET_KEYS)}")
    for key in ("device", "runtime", "format", "precisions"):
        if key not in data:
            raise UserError(f"{where}: missing field '{key}'")
    device = build(_Device, {"device": data["device"]}, where).device
    if not isinstance(data["runtime"], str) or data["runtime"] not in BACKENDS:
        raise UserError(f"{where}: unknown runtime '{data['runtime']}'{did_you_mean(str(data['runtime']), BACKENDS)}")
    try:
        target_format = Format(data["format"])
    except ValueError:
        formats = [f.value for f in Format]
        raise UserError(f"{where}: unknown format '{data['format']}'{did_you_mean(str(data['format']), formats)}") from None
    isa = str(data.get("isa", "host"))
    resolve_isa(isa, where)  # an unknown name fails here, not at first use
    options = data.get("options") or {}
    check_options(data["runtime"], options, f"{where}, options")
    precisions = _names(data["precisions"], f"{where}, precisions", "a list of precisions such as [fp32, int8]")
    lowering = _listed(data.get("lowering"), f"{where}, lowering", "a list of steps such as [{pass: optimize-onnx}]")
    recipes = data.get("recipes") or {}
    if not isinstance(recipes, dict) or not all(isinstance(v, str) for v in recipes.values()):
        raise UserError(f"{where}, recipes: expected a mapping of precision to recipe name such as {{int8: int8}}")
    return Target(
        name=str(data.get("name", path.stem)), device=device, runtime=data["runtime"], format=target_format,
        precisions=precisions, options=dict(options),
        constraints=build(Constraints, data.get("constraints"), f"{where}, constraints"),
        lowering=tuple(parse_step(raw, f"{where}, lowering {i + 1}") for i, raw in enumerate(lowering)),
        quantize=_quantize_entries(data.get("quantize"), where), default_recipe=str(data.get("default_recipe", "fp32")),
        recipes={str(k): v for k, v in recipes.items()},
        description=str(data.get("description", "")), source=str(path),
        isa=isa,
    )


def _listed(raw: Any, where: str, expected: str) -> list:
    """A list field (absent: empty), else a UserError saying what it should be."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise UserError(f"{where}: expected {expected}, got {type(raw).__name__}")
    return raw


def _names(raw: Any, where: str, expected: str) -> tuple[str, ...]:
    """A list of strings, else a UserError saying what it should be."""
    listed = _listed(raw, where, expected)
    if not all(isinstance(name, str) for name in listed):
        raise UserError(f"{where}: expected {expected}, got {raw!r}")
    return tuple(listed)


def _quantize_entries(raw: Any, where: str) -> dict[str, tuple[Step, ...]]:
    """The `quantize:` section: `int8/static: [steps]` (or one step); the last step's pass must take intents."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{where}, quantize: expected a mapping such as int8/static: {{pass: quantize-static}}")
    hints = typing.get_type_hints(QuantizeIntent)
    precisions, schemes = typing.get_args(hints["precision"]), typing.get_args(typing.get_args(hints["scheme"])[0])
    keys = [f"{precision}/{scheme}" for precision in precisions for scheme in schemes]
    entries = {}
    for key, steps in raw.items():
        if key not in keys:
            raise UserError(f"{where}, quantize: unknown entry '{key}'{did_you_mean(str(key), keys)}; "
                            f"entries are precision/scheme: {', '.join(keys)}")
        listed = steps if isinstance(steps, list) else [steps]
        parsed = tuple(parse_step(step, f"{where}, quantize {key}, step {i + 1}") for i, step in enumerate(listed))
        if not parsed or not get_pass(parsed[-1].pass_name).takes_intents():
            raise UserError(f"{where}, quantize {key}: the last step must be a quantizing pass that takes a recipe's "
                            f"intent, not {parsed[-1].pass_name if parsed else 'nothing'}")
        entries[str(key)] = parsed
    return entries


@dataclass(frozen=True, slots=True)
class _Device:
    device: Literal["cpu", "gpu", "npu", "mobile"]


def all_targets() -> list[Target]:
    return [load_target(name) for name in builtin_names("targets")]
