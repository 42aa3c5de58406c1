"""Small JSON files of a model or adapter folder, read with one clear line for what is wrong in them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekit.errors import UserError, gist


def json_file(path: Path, kind: type) -> Any:
    """The JSON value in `path`, which must be a `kind` (list or dict)."""
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON: {gist(error)}") from None
    if not isinstance(value, kind):
        raise UserError(f"{path}: expected a JSON {'list' if kind is list else 'object'}, got {type(value).__name__}")
    return value
