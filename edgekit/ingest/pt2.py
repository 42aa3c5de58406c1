"""What a torch.export `.pt2` must be before torch reads it: plain data, so that reading it runs no code.

`torch.export.load` unpickles members (with `weights_only=False` where the archive asks), loads AOTInductor
libraries it holds, evaluates each shape expression with `sympy.sympify` (Python's eval) and `exec`s the guard code
when the program is unlifted; the FX code it then generates quotes the graph's names. So an archive is read only
when every member is one of torch.export's data files, every pickle loads with `weights_only=True`, every shape
expression and guard is arithmetic over sizes, and every name is plain. `--trust-remote-code` skips this check.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgekit.errors import UserError

TRUST_HINT = "edgekit runs no code from a model: pass --trust-remote-code only if you trust whoever made it"
ROOT_FILES = frozenset({"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"})
DATA_FILE = re.compile(r"models/[^/]+\.json|data/(weights|constants)/[^/]+|data/sample_inputs/[^/]+\.pt|extra/.+")
OBJECT_PREFIXES = ("custom_obj", "opaque_obj")  # constants that are Python objects, not tensors
PLAIN = re.compile(r"[A-Za-z0-9_.:+-]*")  # names, targets, dtypes, versions: nothing that can leave a quoted name
FREE_TEXT = frozenset({"metadata", "as_string", "as_strings"})  # stored on nodes or repr()'d into code, never run
TREE_SPECS = frozenset({"in_spec", "out_spec"})
SYMBOL = re.compile(r"[a-z]+[0-9]+")  # s0, u3: torch's size symbols
NUMBER = re.compile(r"-?[0-9]*\.?[0-9]+(e[-+]?[0-9]+)?")  # srepr writes a Float's digits as a string
SYMPY_CALLS = frozenset({  # what srepr writes for torch's shape expressions: sympy's classes and torch's own functions
    "Add", "Mul", "Pow", "Integer", "Rational", "Float", "Symbol", "Max", "Min", "Mod", "Abs", "floor", "ceiling",
    "Equality", "Unequality", "StrictLessThan", "LessThan", "StrictGreaterThan", "GreaterThan", "And", "Or", "Not",
    "Piecewise", "ExprCondPair", "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
})
SYMPY_NAMES = frozenset({"oo", "zoo", "nan", "true", "false"})
SIZE_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
GUARD_CALLS = frozenset({"max", "min", "abs"})
ARITHMETIC = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.operator, ast.unaryop, ast.cmpop,
              ast.boolop, ast.Load)


def check_plain_archive(path: Path, torch: Any) -> None:
    """Refuse `path` unless torch.export.load can read it without running anything the file carries."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = _members(archive, path)
            pickled: set[str] = set()
            for relative, name in members.items():
                if relative.startswith("models/"):
                    _check_program(_json(archive, name, path), f"{path}: {name}")
                elif relative.endswith(".json") and relative.startswith("data/"):
                    pickled |= _pickled_payloads(_json(archive, name, path), name, path)
            pickled |= {name for relative, name in members.items() if relative.endswith(".pt")}
            for name in sorted(pickled & set(members.values())):  # a member that is missing torch cannot read either
                try:
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                except Exception:
                    raise UserError(f"{path}: {name} holds pickled objects beyond tensors; {TRUST_HINT}") from None
    except (zipfile.BadZipFile, OSError, EOFError, RecursionError) as error:  # RecursionError: JSON nested too deep
        raise UserError(f"{path}: cannot read it as a torch.export archive: {error}") from None


def _members(archive: zipfile.ZipFile, path: Path) -> dict[str, str]:
    """Member path inside the archive's one top folder → full name; anything but torch.export's data files is refused."""
    names = archive.namelist()
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise UserError(f"{path}: {', '.join(repeated)} appear more than once in the archive; {TRUST_HINT}")
    roots = {name.partition("/")[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise UserError(f"{path} is not a torch.export archive (its files are not in one folder)")
    members = {name.partition("/")[2]: name for name in names if not name.endswith("/")}
    for relative, name in members.items():
        if relative not in ROOT_FILES and not DATA_FILE.fullmatch(relative):
            raise UserError(f"{path}: {name} is not torch.export data (compiled code or another layout); {TRUST_HINT}")
    return members


def _json(archive: zipfile.ZipFile, name: str, path: Path) -> Any:
    try:
        return json.loads(archive.read(name))
    except ValueError:
        raise UserError(f"{path}: {name} is not valid JSON") from None


def _pickled_payloads(config: Any, name: str, path: Path) -> set[str]:
    """The members a weights/constants config tells torch to unpickle; object constants are refused outright."""
    _check_program(config, f"{path}: {name}")
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(entry, dict) for entry in entries.values()):
        raise UserError(f"{path}: {name} is not a valid payload config")
    folder = name.rpartition("/")[0]
    pickled = set()
    for entry in entries.values():
        member = f"{folder}/{entry.get('path_name', '')}"
        if str(entry.get("path_name", "")).startswith(OBJECT_PREFIXES):
            raise UserError(f"{path}: {member} is a pickled Python object; {TRUST_HINT}")
        if entry.get("use_pickle"):
            pickled.add(member)
    return pickled


def _check_program(document: Any, where: str) -> None:
    """Every shape expression is sympy arithmetic, every guard compares sizes, every other name is plain."""
    for key, value in _strings(document):
        if key == "expr_str":
            _check_expression(value, where, _sympy_node)
        elif key == "guards_code":
            _check_expression(value, where, _guard_node)
        elif key in TREE_SPECS:
            _check_tree_spec(value, where)
        elif not PLAIN.fullmatch(value):
            raise UserError(f"{where}: {key or 'a name'} {value[:60]!r} is not a plain name; {TRUST_HINT}")


def _check_tree_spec(text: str, where: str) -> None:
    """A pytree spec may not name a module for torch to import (a defaultdict's factory, an enum's class)."""
    def no_enum(mapping: dict) -> dict:
        if "__enum__" in mapping:
            raise UserError(f"{where}: a tree spec names an enum class to import; {TRUST_HINT}")
        return mapping

    try:
        nodes = [json.loads(text)[1]]
        while nodes:
            node = nodes.pop()
            if node.get("type") == "collections.defaultdict":
                raise UserError(f"{where}: a tree spec names a defaultdict factory to import; {TRUST_HINT}")
            if isinstance(node.get("context"), str):
                try:
                    json.loads(node["context"], object_hook=no_enum)
                except ValueError:
                    pass  # a context torch reads with the type's own registered reader
            nodes.extend(node.get("children_spec") or [])
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        raise UserError(f"{where}: a tree spec is not valid") from None


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(the key it sits under, string) for every string and mapping key, leaving out free-text fields."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for inner_key, inner in value.items():
            yield "", inner_key
            if inner_key not in FREE_TEXT:
                yield from _strings(inner, inner_key)
    elif isinstance(value, list):
        for inner in value:
            yield from _strings(inner, key)


def _check_expression(text: str, where: str, allowed: Callable[[ast.AST], bool]) -> None:
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # the parser's "nested too deep" is one of the last two
        tree = None
    if tree is None or not all(allowed(node) for node in ast.walk(tree)):
        raise UserError(f"{where}: the expression {text[:80]!r} is code, not size arithmetic; {TRUST_HINT}")


def _sympy_node(node: ast.AST) -> bool:
    """A node sympify may evaluate: numbers, size symbols, sympy's classes; a string is only a symbol or a number."""
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id in SYMPY_CALLS
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float, bool) or (isinstance(node.value, str) and (
            SYMBOL.fullmatch(node.value) is not None or NUMBER.fullmatch(node.value) is not None))
    if isinstance(node, ast.Name):
        return node.id in SYMPY_CALLS or node.id in SYMPY_NAMES or SYMBOL.fullmatch(node.id) is not None
    return isinstance(node, (*ARITHMETIC, ast.keyword, ast.Tuple))


def _guard_node(node: ast.AST) -> bool:
    """A node of a guard: arithmetic and comparisons over `L['input']....size()[i]` and numbers."""
    if isinstance(node, ast.Call):
        func = node.func
        return ((isinstance(func, ast.Name) and func.id in GUARD_CALLS)
                or (isinstance(func, ast.Attribute) and func.attr in SIZE_METHODS and not node.args and not node.keywords))
    if isinstance(node, ast.Attribute):
        return node.attr in SIZE_METHODS
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float, bool) or (isinstance(node.value, str) and node.value.isidentifier()
                                                           and not node.value.startswith("_"))
    if isinstance(node, ast.Name):
        return node.id in ("L", *GUARD_CALLS)
    return isinstance(node, (*ARITHMETIC, ast.Subscript))
