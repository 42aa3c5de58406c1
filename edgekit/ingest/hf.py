"""Read a local Hugging Face model folder (config.json + weights + tokenizer) as an embedding model.

The module is wrapped so forward takes the tokenizer's int64 [batch, sequence] tensors
(input_ids, attention_mask, and token_type_ids when the tokenizer makes them) and returns the
embedding: the sentence embedding for sentence-transformers folders (modules.json with a
Pooling module, then Normalize when listed), else last_hidden_state. Nothing is downloaded.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any

from edgekit.digest import data_sha256, folder_hash
from edgekit.errors import MissingBackend, UserError, gist
from edgekit.ingest.folder import json_file
from edgekit.model import Format, Model
from edgekit.spec import TensorSpec, merge_specs

EXAMPLE_TEXT = ("edgekit compiles a trained model for an edge device.", "A short sentence.")
POOLING_MODES = ("mean", "cls", "max")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise MissingBackend("transformers", "hf", "Hugging Face model folders") from None
    return transformers


def load_tokenizer(folder: str | Path):
    """The folder's own tokenizer, offline; Python code the folder names (auto_map) never runs."""
    transformers = _transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as error:  # a folder from anyone: any failure to read it is the folder's
        raise UserError(f"{folder}: cannot load its tokenizer offline: {_why(error)}") from None


def read_hf_folder(path: Path, input_specs: tuple[TensorSpec, ...], adapter_folders: tuple[str | Path, ...] = ()) -> Model:
    """Load `path` with transformers (local files only) and wrap it as an embedding model. Weights are read without
    pickle code (safetensors, or a .bin torch loads with weights_only), and Python code the folder names (auto_map)
    never runs: transformers is told not to, so it does not ask on stdin either.

    `adapter_folders` (PEFT adapters) are checked before the base loads and merged into its weights in that order;
    the model's content hash then covers them, and `meta["adapters"]` records each."""
    transformers = _transformers()
    import torch

    adapters = []
    if adapter_folders:
        from edgekit.ingest.adapters import merge_adapters, read_adapter

        adapters = [read_adapter(folder) for folder in adapter_folders]
    try:
        encoder = transformers.AutoModel.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as error:  # a folder from anyone: any failure to read it is the folder's
        raise UserError(f"{path}: cannot load it as a Hugging Face model offline: {_why(error)}") from None
    if adapters:
        encoder = merge_adapters(encoder, path, adapters)
    tokenizer = load_tokenizer(path)
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in tokenizer.model_input_names]
    if names[:2] != ["input_ids", "attention_mask"]:
        raise UserError(f"{path}: the tokenizer makes {tokenizer.model_input_names}; edgekit needs input_ids and attention_mask")
    pooling, normalize = sentence_pooling(path)
    wrapper_class = _wrapper_classes()["token_type_ids" in names]
    module = wrapper_class(encoder.eval(), pooling, normalize).eval()
    encoded = tokenizer(list(EXAMPLE_TEXT), padding=True, return_tensors="pt")
    examples = tuple(encoded[name].to(torch.int64) for name in names)
    own = tuple(TensorSpec(name, ("batch", "sequence"), "int64") for name in names)
    inputs = merge_specs(own, input_specs, str(path))
    hidden = int(encoder.config.hidden_size)
    output = (TensorSpec("sentence_embedding", ("batch", hidden), "float32") if pooling
              else TensorSpec("last_hidden_state", ("batch", "sequence", hidden), "float32"))
    digest = folder_hash(path)
    meta = {"content_hash": digest, "source_hash": digest, "source": str(path), "passes": [], "precision": "fp32",
            "tokenizer": str(path)}
    if adapters:  # the step cache keys on content_hash: an adapted model must not reuse the base's steps
        meta["content_hash"] = data_sha256({"base": digest, "adapters": [adapter.sha256 for adapter in adapters]})
        meta["adapters"] = [adapter.record() for adapter in adapters]
    return Model(Format.TORCH, inputs, (output,), module=module, example_inputs=examples, meta=meta)


def sentence_pooling(path: Path) -> tuple[str | None, bool]:
    """(pooling mode or None, normalize) from a sentence-transformers folder's modules.json."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return None, False
    modules = json_file(modules_file, list)
    if not all(isinstance(entry, dict) and isinstance(entry.get("type"), str) and isinstance(entry.get("path", ""), str)
               for entry in modules):
        raise UserError(f"{modules_file}: expected a list of modules, each with a 'type' and a 'path' string "
                        "(as sentence-transformers writes it)")
    kinds = {entry["type"].rpartition(".")[2]: entry for entry in modules}
    if "Pooling" not in kinds:
        return None, False
    folder = Path(kinds["Pooling"].get("path", ""))
    if folder.is_absolute() or ".." in folder.parts:
        raise UserError(f"{modules_file}: the Pooling module's path {str(folder)!r} leaves the model folder")
    config_file = path / folder / "config.json"
    config = json_file(config_file, dict) if config_file.is_file() else {"pooling_mode_mean_tokens": True}
    chosen = [mode for mode in POOLING_MODES if config.get(f"pooling_mode_{mode}_tokens" if mode != "cls" else "pooling_mode_cls_token")]
    others = [key for key, on in config.items() if key.startswith("pooling_mode_") and on
              and key.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token") not in POOLING_MODES]
    if len(chosen) != 1 or others:
        raise UserError(f"{config_file}: edgekit supports exactly one pooling mode of {', '.join(POOLING_MODES)}; "
                        f"this folder sets {', '.join(k for k, on in config.items() if k.startswith('pooling_mode_') and on)}")
    return chosen[0], "Normalize" in kinds


def _why(error: Exception) -> str:
    """transformers' reason in one line, said plainly where it refused code or pickles or met corrupt weights."""
    if "trust_remote_code" in str(error):  # transformers refused to import the folder's own modeling code
        return "it holds its own Python code (auto_map), which edgekit never runs: use a folder with a built-in architecture"
    if isinstance(error, pickle.UnpicklingError):  # torch.load(weights_only=True) refused a .bin
        return "its weights file holds pickled objects beyond tensors, which edgekit never unpickles: save it as model.safetensors"
    if type(error).__module__.startswith("safetensors"):
        return f"its .safetensors weights are corrupt or truncated ({gist(error)}): copy the file again"
    return gist(error)


@functools.cache
def _wrapper_classes() -> tuple[type, type]:
    """(Encoder, TypedEncoder), defined on first use so importing this module loads no torch."""
    import torch

    class Encoder(torch.nn.Module):
        """A transformers encoder → its last_hidden_state, or the pooled (and normalized) sentence embedding."""

        def __init__(self, encoder: Any, pooling: str | None, normalize: bool) -> None:
            super().__init__()
            self.encoder = encoder
            self.pooling = pooling
            self.normalize = normalize

        def embed(self, input_ids, attention_mask, token_type_ids=None):
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            if self.pooling is None:
                return hidden
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            if self.pooling == "mean":
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            elif self.pooling == "max":
                pooled = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
            else:
                pooled = hidden[:, 0]
            return torch.nn.functional.normalize(pooled, p=2, dim=1) if self.normalize else pooled

        def forward(self, input_ids, attention_mask):
            return self.embed(input_ids, attention_mask)

    class TypedEncoder(Encoder):
        """An Encoder whose tokenizer also makes token_type_ids."""

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.embed(input_ids, attention_mask, token_type_ids)

    return Encoder, TypedEncoder
