"""An offline English corpus: sentences from the Python documentation CPython ships in `pydoc_data`.

Prose paragraphs of `pydoc_data.topics` are split into sentences; code, tables and headings
are dropped; duplicates removed. Each sentence goes to calibration or evaluation by a hash
of its text, so the two files are disjoint and stable across runs and machines.

    python benchmarks/corpus.py --out out/data       # writes pydoc_calib.txt and pydoc_eval.txt
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

SENTENCE_END = re.compile(r"(?<=[a-z0-9\)\"][.!?])\s+(?=[A-Z])")
CODE_MARKS = (">>>", "...", "::", "={", "()", "->", "**", "__", "|", "+-", "\\")


def sentences() -> list[str]:
    """Every distinct prose sentence of the Python docs' topics, in a fixed order."""
    from pydoc_data.topics import topics

    found: dict[str, None] = {}
    for name in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[name]):
            lines = paragraph.splitlines()
            if not lines or any(line.startswith("     ") for line in lines):  # code blocks are indented further
                continue
            text = " ".join(line.strip() for line in lines)
            for sentence in SENTENCE_END.split(text):
                if _is_prose(sentence):
                    found.setdefault(sentence, None)
    return list(found)


def _is_prose(sentence: str) -> bool:
    if not 40 <= len(sentence) <= 300 or not sentence[0].isupper() or sentence[-1] not in ".!?":
        return False
    if any(mark in sentence for mark in CODE_MARKS):
        return False
    letters = sum(c.isalpha() or c.isspace() for c in sentence)
    return letters / len(sentence) > 0.9 and len(sentence.split()) >= 8


def split(calibration_share: float = 0.5) -> tuple[list[str], list[str]]:
    """(calibration, evaluation) sentences, disjoint, assigned by a hash of each sentence."""
    calibration, evaluation = [], []
    for sentence in sentences():
        bucket = int(hashlib.sha256(sentence.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (calibration if bucket < calibration_share else evaluation).append(sentence)
    return calibration, evaluation


def write(folder: Path, calibration_count: int = 256, evaluation_count: int = 256) -> tuple[Path, Path]:
    """pydoc_calib.txt and pydoc_eval.txt: one sentence a line."""
    calibration, evaluation = split()
    folder.mkdir(parents=True, exist_ok=True)
    calib_path, eval_path = folder / "pydoc_calib.txt", folder / "pydoc_eval.txt"
    calib_path.write_text("\n".join(calibration[:calibration_count]) + "\n")
    eval_path.write_text("\n".join(evaluation[:evaluation_count]) + "\n")
    return calib_path, eval_path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/data"))
    parser.add_argument("--calib", type=int, default=256)
    parser.add_argument("--eval", type=int, default=256)
    args = parser.parse_args()
    calib, evaluation = split()
    paths = write(args.out, args.calib, args.eval)
    print(f"{len(calib)} calibration and {len(evaluation)} evaluation sentences available; wrote {', '.join(map(str, paths))}")
