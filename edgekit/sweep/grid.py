"""The sweep's grid: models (each with its own data and input specs) × targets × recipes × measuring devices, and
the content key of each cell, so a re-run only runs what changed."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from edgekit import __version__
from edgekit.digest import data_sha256, file_sha256, folder_hash
from edgekit.errors import UserError

DATA_PREFIXES = ("text:", "images:")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
LOCAL_DEVICE = "local"  # the CPU of the node that measures, advertised by the local Ray edgekit starts


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model of the sweep: a short name for tables and files, its source, its data and input specs."""

    name: str
    source: str
    calib: str | None = None
    eval: str | None = None
    inputs: tuple[str, ...] = ()  # `--input` texts, parsed in the worker


@dataclass(frozen=True, slots=True)
class Settings:
    """What every cell is compiled and measured with (part of each cell's key)."""

    threads: int = 1
    runs: int = 50
    warmup: int = 10
    compile_bench_runs: int = 20
    distill_processes: int = 1


@dataclass(frozen=True, slots=True)
class Cell:
    model: ModelEntry
    target: str
    recipe: str
    device: str = LOCAL_DEVICE

    @property
    def id(self) -> str:
        base = f"{self.model.name}/{self.target}/{self.recipe}"
        return base if self.device == LOCAL_DEVICE else f"{base}@{self.device}"

    @property
    def slug(self) -> str:
        """A file name for the cell's package and log: its id with `/` and `@` as `-`."""
        return re.sub(r"[^A-Za-z0-9_.-]", "-", self.id.replace("/", "-").replace("@", "-on-"))


def model_entries(models: tuple[str, ...], calib: tuple[str, ...], evaluation: tuple[str, ...],
                  inputs: tuple[str, ...]) -> list[ModelEntry]:
    """`NAME=SOURCE` or `SOURCE` per model; data and input options either for every model (`D`) or for one
    (`NAME=D`)."""
    named = [_named(text) for text in models]
    names = [name for name, _ in named]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UserError(f"sweep: two models are named {duplicates[0]}: name them NAME=SOURCE")
    per_model = {option: _per_model(values, names, option)
                 for option, values in (("--calib", calib), ("--eval", evaluation))}
    specs = _per_model_lists(inputs, names)
    return [ModelEntry(name, source, per_model["--calib"].get(name), per_model["--eval"].get(name), specs.get(name, ()))
            for name, source in named]


def _named(text: str) -> tuple[str, str]:
    name, separator, source = text.partition("=")
    if separator and NAME.fullmatch(name):
        return name, source
    stem = Path(text.rpartition(":")[0] if _is_factory(text) else text.rstrip("/")).stem
    derived = re.sub(r"[^A-Za-z0-9_.-]", "-", stem)[:64] or "model"
    return derived, text


def _split_option(value: str, names: list[str]) -> tuple[str | None, str]:
    name, separator, rest = value.partition("=")
    return (name, rest) if separator and name in names else (None, value)


def _per_model(values: tuple[str, ...], names: list[str], option: str) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for value in values:
        name, data = _split_option(value, names)
        for model in [name] if name else names:
            if model in chosen and name is None:
                raise UserError(f"sweep: {option} given twice for model {model}")
            chosen[model] = data
    return chosen


def _per_model_lists(values: tuple[str, ...], names: list[str]) -> dict[str, tuple[str, ...]]:
    chosen: dict[str, tuple[str, ...]] = {}
    for value in values:
        name, spec = _split_option(value, names)
        for model in [name] if name else names:
            chosen[model] = (*chosen.get(model, ()), spec)
    return chosen


def expand(models: list[ModelEntry], targets: tuple[str, ...], recipes: tuple[str, ...],
           devices: tuple[str, ...]) -> list[Cell]:
    """Every (model, target, recipe, device), in that order of nesting."""
    if not models or not targets or not recipes or not devices:
        raise UserError("sweep: give at least one model, --targets and --recipes")
    return [Cell(model, target, recipe, device)
            for model in models for target in targets for recipe in recipes for device in devices]


def cell_key(cell: Cell, settings: Settings, host: dict[str, str]) -> str:
    """sha256 of everything the cell's row depends on: the source's and data's contents, the target file and the
    recipe(s) it resolves to there, the settings, edgekit's code and the libraries' versions, and for the local device
    this host's CPU. An unreadable source or data path is the user's mistake, named here."""
    from edgekit.instruments import library_versions

    return data_sha256({
        "model": {"source": _content(cell.model.source.rpartition(":")[0] if _is_factory(cell.model.source)
                                     else cell.model.source, "source"),
                  "factory": cell.model.source.rpartition(":")[2] if _is_factory(cell.model.source) else None,
                  "calib": _data_content(cell.model.calib), "eval": _data_content(cell.model.eval),
                  "inputs": cell.model.inputs},
        "target": cell.target, "recipe": recipe_identity(cell.target, cell.recipe), "device": cell.device,
        "host": host if cell.device == LOCAL_DEVICE else None, "settings": asdict(settings),
        "edgekit": __version__, "edgekit_code": edgekit_code(), "libraries": library_versions(),
    })


@cache
def edgekit_code() -> str:
    """sha256 of edgekit's own modules and built-in targets and recipes: a development checkout changes without a
    new version number, and its cells must run again."""
    root = Path(__file__).resolve().parent.parent
    return data_sha256({p.relative_to(root).as_posix(): file_sha256(p)
                        for p in sorted(root.rglob("*")) if p.suffix in (".py", ".yaml") and p.is_file()})


def recipe_identity(target_name: str, recipe: str) -> dict:
    """The target file's hash and the recipe(s) the name resolves to on it (`auto`: every candidate)."""
    from edgekit.autoselect import candidates
    from edgekit.build import recipe_for
    from edgekit.target import load_target

    target = load_target(target_name)
    chosen = ([candidate.recipe.to_dict() if candidate.recipe else candidate.skipped for candidate in candidates(target)]
              if recipe == "auto" else recipe_for(target, recipe).to_dict())
    return {"target_file": file_sha256(Path(target.source)), "recipes": chosen}


def _is_factory(source: str) -> bool:
    path, separator, factory = source.rpartition(":")
    return bool(separator and path.endswith(".py") and factory.isidentifier())


def _data_content(data: str | None) -> str | None:
    if data is None:
        return None
    for prefix in DATA_PREFIXES:
        if data.startswith(prefix):
            return prefix + _content(data[len(prefix):], "data")
    return _content(data, "data")


def _content(text: str, what: str) -> str:
    path = Path(text)
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        return folder_hash(path)
    raise UserError(f"sweep: {what} {text} not found")
