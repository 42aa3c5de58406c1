"""PEFT adapters on a Hugging Face folder: a LoRA trained here on all-MiniLM-L6-v2, merged at ingest and compiled.

Bounds, on 16 held-out pydoc sentences: the cpu-ort fp32 package of base+LoRA matches the adapted PyTorch model to
cosine ≥ 0.9999 (measured 0.9999999) and the base model only below BASE_BOUND (measured ≤ 0.9601); the merge
alone, in PyTorch, matches peft's unmerged adapter to cosine ≥ 0.99999 for LoRA, LoHa, LoKr and IA3.
"""

from __future__ import annotations

import functools
import json
import pickle
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from extras import require

from edgekit.cli import main
from edgekit.digest import folder_hash
from edgekit.errors import UserError
from edgekit.ingest import ingest
from edgekit.ingest.adapters import read_adapter
from edgekit.ingest.hf import load_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.corpus import split  # noqa: E402

BASE_BOUND = 0.98  # the trained LoRA moves the held-out embeddings further than this from the base's (measured ≤ 0.960)


@dataclass(frozen=True)
class Trained:
    folder: Path
    adapted: np.ndarray  # peft's own (unmerged) embeddings of the held-out sentences
    base: np.ndarray  # the base model's


@functools.cache
def corpus() -> dict[str, list[str]]:
    """Pydoc sentences: to train on, held out (compared), and the compile's evaluation text."""
    calibration, evaluation = split()
    return {"train": calibration[:64], "held_out": evaluation[:16], "eval": evaluation[16:24]}


@functools.cache
def tokenizer(minilm: Path):
    return load_tokenizer(minilm)


def embed(model, minilm: Path, texts: list[str], max_length: int | None = None):
    """Mean-pooled, normalized sentence embeddings (all-MiniLM-L6-v2's pooling) of a transformers or peft model."""
    import torch

    encoded = tokenizer(minilm)(texts, padding=True, truncation=max_length is not None, max_length=max_length,
                                return_tensors="pt")
    hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * mask).sum(dim=1) / mask.sum(dim=1), dim=1)


def peft_model(minilm: Path, config):
    """MiniLM's transformers model with a fresh peft adapter of `config`, in eval mode (no dropout)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModel

    torch.manual_seed(0)
    return get_peft_model(AutoModel.from_pretrained(str(minilm)), config).eval()


def saved(model, minilm: Path, folder: Path) -> Trained:
    """`model`'s adapter saved as peft saves it (adapter_config.json + adapter_model.safetensors), with the
    embeddings of the held-out sentences with and without it."""
    import torch

    with torch.no_grad():
        adapted = embed(model, minilm, corpus()["held_out"]).numpy()
        with model.disable_adapter():
            base = embed(model, minilm, corpus()["held_out"]).numpy()
    model.save_pretrained(str(folder))
    return Trained(folder, adapted, base)


@pytest.fixture(scope="module")
def lora(minilm, tmp_path_factory) -> Trained:
    """A rank-4 LoRA on query/value, trained 10 Adam steps (lr 5e-3, 8 sentences of at most 24 tokens each) to pull
    pydoc sentences' embeddings towards fixed random directions: it moves the held-out embeddings to cosine
    0.91-0.96 of the base's."""
    require("peft", "peft")
    import torch
    from peft import LoraConfig

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        model = peft_model(minilm, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]))
        train = corpus()["train"]
        targets = torch.nn.functional.normalize(torch.randn(len(train), 384), dim=1)
        optimizer = torch.optim.Adam([weight for weight in model.parameters() if weight.requires_grad], lr=5e-3)
        for step in range(10):
            batch = slice(step * 8 % len(train), step * 8 % len(train) + 8)
            loss = torch.nn.functional.mse_loss(embed(model, minilm, train[batch], max_length=24), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return saved(model, minilm, tmp_path_factory.mktemp("adapters") / "lora")


def cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    return (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))


def package_embeddings(package: Path, minilm: Path) -> np.ndarray:
    from edgekit.runtime import load

    session = load(package)
    encoded = tokenizer(minilm)(corpus()["held_out"], padding=True, return_tensors="np")
    return session.run({spec.name: encoded[spec.name].astype(np.int64) for spec in session.inputs})["sentence_embedding"]


def load_tokens(minilm: Path) -> tuple:
    encoded = tokenizer(minilm)(corpus()["held_out"], padding=True, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"]


def test_the_lora_moved_the_embeddings(lora):
    assert (lora.folder / "adapter_model.safetensors").is_file()
    assert cosines(lora.adapted, lora.base).max() < BASE_BOUND


@pytest.mark.slow  # 30-45 s on 2 cores: a dynamo export of a 22M-parameter BERT, measured
def test_compiled_package_is_the_adapted_model(lora, minilm, tmp_path):
    from edgekit.compiler import compile

    text = tmp_path / "eval.txt"
    text.write_text("\n".join(corpus()["eval"]) + "\n")
    cache = tmp_path / "cache"
    adapted = compile(minilm, "cpu-ort", tmp_path / "adapted", "fp32", eval=f"text:{text}", cache_dir=cache,
                      bench_runs=1, adapters=(lora.folder,))
    got = package_embeddings(adapted.package, minilm)
    assert cosines(got, lora.adapted).min() >= 0.9999
    assert cosines(got, lora.base).max() < BASE_BOUND
    [record] = json.loads((adapted.package / "manifest.json").read_text())["provenance"]["adapters"]
    assert record == {"path": str(lora.folder), "sha256": folder_hash(lora.folder), "peft_type": "LORA", "rank": 4,
                      "target_modules": ["query", "value"], "base_model": str(minilm)}

    # the base alone cannot reuse this export: its content hash (the first step's cache key) differs, see below
    assert adapted.manifest.provenance["source_hash"] == folder_hash(minilm)

    # diff merges the same adapter: the float reference is base+LoRA (its export from the cache), equal at every layer
    diffed = CliRunner().invoke(main, ["diff", str(minilm), str(adapted.package), "--adapter", str(lora.folder),
                                       "--samples", "2", "--json", "--cache-dir", str(cache)])
    assert diffed.exit_code == 0, diffed.output
    layers = json.loads(diffed.stdout)
    assert layers["lossy_step"] is None and layers["reference_cached"] == len(layers["reference_steps"]) >= 1
    assert len(layers["layers"]) > 50 and all(layer["snr_db"] is None or layer["snr_db"] > 60 for layer in layers["layers"])
    without = CliRunner().invoke(main, ["diff", str(minilm), str(adapted.package), "--cache-dir", str(cache)])
    assert without.exit_code == 1
    assert f"compiled with PEFT adapter(s) sha256 {folder_hash(lora.folder)[:12]}…" in without.stderr


def test_merge_records_the_adapters_in_order_and_keys_the_cache_on_them(lora, minilm, tmp_path, caplog):
    import torch

    renamed = shutil.copytree(lora.folder, tmp_path / "renamed")
    config = json.loads((renamed / "adapter_config.json").read_text())
    (renamed / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "someone/other-model"}))
    base = ingest(minilm)
    adapted = ingest(minilm, adapters=(lora.folder,))
    assert "made for" not in caplog.text  # trained on this very folder: its name matches
    with torch.no_grad():
        merged = adapted.module(*load_tokens(minilm)).numpy()
    assert cosines(merged, lora.adapted).min() >= 0.99999
    assert adapted.meta["source_hash"] == base.content_hash != adapted.content_hash
    both = ingest(minilm, adapters=(lora.folder, renamed))
    swapped = ingest(minilm, adapters=(renamed, lora.folder))
    assert [r["path"] for r in both.meta["adapters"]] == [str(lora.folder), str(renamed)]
    assert len({both.content_hash, swapped.content_hash, adapted.content_hash}) == 3
    assert "was made for someone/other-model" in caplog.text  # a name that differs warns; the tensors decide


@pytest.mark.parametrize("kind", ["LOHA", "LOKR", "IA3"])
def test_other_mergeable_kinds(kind, minilm, tmp_path):
    require("peft", "peft")
    import torch
    from peft import IA3Config, LoHaConfig, LoKrConfig

    config = {"LOHA": lambda: LoHaConfig(r=4, target_modules=["query", "value"], init_weights=False),
              "LOKR": lambda: LoKrConfig(r=4, target_modules=["query", "value"], init_weights=False),
              "IA3": lambda: IA3Config(target_modules=["key", "value", "output.dense"],
                                       feedforward_modules=["output.dense"])}[kind]()
    adapter = peft_model(minilm, config)
    if kind == "IA3":  # its vectors start at 1 (no change): jitter them
        with torch.no_grad():
            for name, weight in adapter.named_parameters():
                if "ia3_l" in name:
                    weight.add_(0.2 * torch.randn_like(weight))
    made = saved(adapter, minilm, tmp_path / kind.lower())
    model = ingest(minilm, adapters=(made.folder,))
    with torch.no_grad():
        merged = model.module(*load_tokens(minilm)).numpy()
    assert cosines(merged, made.adapted).min() >= 0.99999
    assert cosines(merged, made.base).max() < 0.9999
    assert model.meta["adapters"][0]["peft_type"] == kind


@pytest.fixture()
def mismatched(tmp_path) -> Path:
    """A LoRA on query/value of a BERT with hidden size 32: same module names as MiniLM, other shapes."""
    require("peft", "peft")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    tiny = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                vocab_size=128))
    get_peft_model(tiny, LoraConfig(r=4, target_modules=["query", "value"])).save_pretrained(str(tmp_path / "tiny"))
    return tmp_path / "tiny"


def test_an_adapter_for_another_model_is_refused_in_one_line(mismatched, minilm):
    with pytest.raises(UserError) as refused:
        ingest(minilm, adapters=(mismatched,))
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"adapter {mismatched}: encoder.layer.")
    assert "is 4×32" in message or "is 32×4" in message
    assert "but the base's encoder.layer." in message and "is Linear 384→384" in message


def test_pickled_weights_are_refused_unread(lora, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(lora.folder / "adapter_config.json", folder)
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    (folder / "adapter_model.bin").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UserError, match="adapter_model.bin, a pickle, which edgekit never unpickles"):
        read_adapter(folder)
    assert not marker.exists()


HOSTILE = {
    "not JSON": (b"{not json", "is not valid JSON"),
    "not UTF-8": (b"\xff\xfe{}", "is not valid JSON"),
    "nested": (b"[" * 100_000, "is not valid JSON"),
    "a list": (b"[1, 2]", "expected a JSON object, got list"),
    "huge": (json.dumps({"peft_type": "LORA", "pad": "x" * (1 << 20)}).encode(), "more than the 1048576"),
    "prompt tuning": (b'{"peft_type": "PROMPT_TUNING"}', "peft_type 'PROMPT_TUNING' is not one edgekit merges"),
    "unhashable type": (b'{"peft_type": ["LORA"]}', "peft_type ['LORA'] is not one edgekit merges"),
    "rank a string": (b'{"peft_type": "LORA", "r": "four"}', "sets rank 'four'"),
    "rank huge": (b'{"peft_type": "LORA", "r": 1000000000}', "sets rank 1000000000"),
    "targets a number": (b'{"peft_type": "LORA", "target_modules": 5}', "target_modules is a int, expected str or list"),
    "a regex": (b'{"peft_type": "LORA", "modules_to_save": ["(a+)+$"]}', "'(a+)+$' is not a plain module name"),
    "pissa": (b'{"peft_type": "LORA", "init_lora_weights": "pissa"}', "change the base weights when the adapter is made"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_configs_are_refused(case, lora, tmp_path):
    text, expected = HOSTILE[case]
    folder = tmp_path / "hostile"
    folder.mkdir()
    shutil.copy(lora.folder / "adapter_model.safetensors", folder)
    (folder / "adapter_config.json").write_bytes(text)
    with pytest.raises(UserError) as refused:
        read_adapter(folder)
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_corrupt_weights_and_missing_files_are_refused(lora, tmp_path):
    folder = shutil.copytree(lora.folder, tmp_path / "corrupt")
    (folder / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        read_adapter(folder)
    with pytest.raises(UserError, match="no adapter_config.json in it: not a PEFT adapter folder"):
        read_adapter(tmp_path)


def test_adapters_need_a_hugging_face_folder(cnn_source, lora):
    with pytest.raises(UserError, match="merge into a Hugging Face model folder .* only"):
        ingest(cnn_source, adapters=(lora.folder,))


def test_cli_takes_adapters(lora, minilm, cnn_source, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "cache"))  # the CLI's log goes there
    planned = CliRunner().invoke(main, ["compile", str(minilm), "-t", "cpu-ort", "--adapter", str(lora.folder),
                                        "--dry-run", "--json"])
    assert planned.exit_code == 0, planned.output
    refused = CliRunner().invoke(main, ["compile", cnn_source, "-t", "cpu-ort", "--adapter", str(lora.folder)])
    assert refused.exit_code == 1
    assert refused.stderr.strip().splitlines() == [
        f"error: PEFT adapters (--adapter) merge into a Hugging Face model folder (with config.json) only; {cnn_source} "
        "is not one"]
