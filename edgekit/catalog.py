"""Find built-in target and recipe files (source checkout or installed wheel) or a user's path."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import UserError
from edgekit.schema import did_you_mean

_PACKAGE_DIR = Path(__file__).resolve().parent


def builtin_dir(kind: str) -> Path:
    """The folder of built-in `targets` or `recipes`: the checkout's top level, else the wheel's copy."""
    for candidate in (_PACKAGE_DIR.parent / kind, _PACKAGE_DIR / "builtin" / kind):
        if candidate.is_dir():
            return candidate
    raise UserError(f"edgekit's built-in {kind} are missing from this installation")


def builtin_names(kind: str) -> list[str]:
    return sorted(path.stem for path in builtin_dir(kind).glob("*.yaml"))


# per-target recipes of earlier edgekit 0.1 checkouts that became one target-neutral recipe (recipes say what, targets say how)
FOLDED_RECIPES = {
    **dict.fromkeys(("int8-static", "int8-nncf", "int8-tflite", "int8-executorch", "int8-tensorrt"), "int8"),
    "int4-weights-nncf": "int4-weights",
    **dict.fromkeys(("prune-distill-int8-nncf", "prune-distill-int8-tflite", "prune-distill-int8-executorch"),
                    "prune-distill-int8"),
}


def resolve(kind: str, name_or_path: str | Path) -> Path:
    """A built-in name (`cpu-ort`) or a path to a YAML file → the file's path."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or "/" in text or path.is_file():
        if not path.is_file():
            raise UserError(f"{kind[:-1]} file not found: {path}")
        return path
    candidate = builtin_dir(kind) / f"{text}.yaml"
    if candidate.is_file():
        return candidate
    if kind == "recipes" and text in FOLDED_RECIPES:
        raise UserError(f"recipe {text} is now {FOLDED_RECIPES[text]}: one recipe that each target quantizes its own "
                        f"way (--recipe {FOLDED_RECIPES[text]})")
    names = builtin_names(kind)
    raise UserError(f"unknown {kind[:-1]} '{text}'{did_you_mean(text, names)}; built-in: {', '.join(names)}")


# values a target or recipe file may hold once YAML aliases are expanded (a few lines of nested aliases expand to
# billions, which any later walk of the data, a message included, would spend minutes and gigabytes on)
MAX_YAML_VALUES = 100_000


def read_yaml(path: Path, kind: str) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_bytes())  # bytes: YAML's reader decodes them and names a bad byte
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML: {str(error).splitlines()[0]}") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply for a {kind[:-1]} file") from None
    if _count_values(data, MAX_YAML_VALUES) > MAX_YAML_VALUES:
        raise UserError(f"{path}: expands to over {MAX_YAML_VALUES} values (YAML aliases?); not a {kind[:-1]} file")
    if isinstance(data, list) and kind == "recipes":
        data = {"steps": data}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top of the {kind[:-1]} file")
    return data


def _count_values(data: object, limit: int) -> int:
    """How many values (keys, items, scalars) `data` holds with aliases expanded, counting no further than `limit`+1."""
    stack, count = [data], 0
    while stack and count <= limit:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            stack += [*value.keys(), *value.values()]
        elif isinstance(value, list):
            stack += value
    return count
