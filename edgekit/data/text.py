"""A text file → a Dataset of token ids, tokenized with a local Hugging Face folder's tokenizer.

Each sample is one line (or one paragraph: lines up to a blank line, joined); blank ones are
skipped. Every sample is padded to the same length so the samples stack: `max_length`, or
the longest sample (at most `max_length`) with `padding: longest`; a static sequence dim in
the model's input spec wins over both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from edgekit.data.dataset import Dataset, fit_to_specs
from edgekit.errors import UserError
from edgekit.spec import TensorSpec


@dataclass(frozen=True, slots=True)
class TextSource:
    text: str
    tokenizer: str | None = None  # a Hugging Face folder; default: the model being compiled
    max_length: int = field(default=128, metadata={"range": (2, 65536)})
    padding: Literal["longest", "max_length"] = "longest"
    split: Literal["lines", "paragraphs"] = "lines"
    limit: int | None = field(default=None, metadata={"range": (1, 10_000_000)})


def read_samples(path: Path, split: str) -> list[str]:
    """The non-blank lines, or paragraphs joined into one line each."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text: {error}") from None
    if split == "lines":
        return [line.strip() for line in text.splitlines() if line.strip()]
    paragraphs, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    return paragraphs


def load_text(source: TextSource, specs: tuple[TensorSpec, ...], origin: str, tokenizer_folder: str | Path | None) -> Dataset:
    """Tokenize the samples of `source.text` into int arrays named like the model's inputs."""
    path = Path(source.text)
    if not path.is_file():
        raise UserError(f"{origin}: text file not found: {path}")
    folder = source.tokenizer or tokenizer_folder
    if folder is None:
        raise UserError(f"{origin}: no tokenizer: give 'tokenizer: path/to/hf-folder' in a data spec file, "
                        "or compile a Hugging Face folder (its tokenizer is used)")
    if not Path(folder, "config.json").is_file() and not any(Path(folder).glob("tokenizer*")):
        raise UserError(f"{origin}: tokenizer folder {folder} holds no tokenizer files")
    samples = read_samples(path, source.split)
    if source.limit:
        samples = samples[: source.limit]
    if not samples:
        raise UserError(f"{origin}: {path} holds no text")
    from edgekit.ingest.hf import load_tokenizer

    tokenizer = load_tokenizer(folder)
    length = _static_length(specs, origin)
    if length is None and source.padding == "longest":
        length = min(source.max_length, max(len(ids) for ids in tokenizer(samples, truncation=False)["input_ids"]))
    encoded = tokenizer(samples, padding="max_length", truncation=True, max_length=length or source.max_length,
                        return_tensors="np")
    made = {name: np.asarray(encoded[name]) for name in encoded}
    missing = [spec.name for spec in specs if spec.name not in made]
    if missing:
        raise UserError(f"{origin}: the model takes {', '.join(missing)}, which the tokenizer of {folder} does not make "
                        f"(it makes {', '.join(made)})")
    arrays = {spec.name: made[spec.name] for spec in specs}
    return Dataset(fit_to_specs(arrays, specs, origin), None, origin)


def _static_length(specs: tuple[TensorSpec, ...], origin: str) -> int | None:
    """The sequence length the inputs fix, if any; all 2-d token inputs must agree."""
    lengths = set()
    for spec in specs:
        if len(spec.shape) != 2:
            raise UserError(f"{origin}: input '{spec.name}' is [{spec.shape_text()}]; token inputs are [batch, sequence]")
        if isinstance(spec.shape[1], int):
            lengths.add(spec.shape[1])
    if len(lengths) > 1:
        raise UserError(f"{origin}: the inputs fix different sequence lengths {sorted(lengths)}")
    return lengths.pop() if lengths else None
