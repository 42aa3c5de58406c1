"""PEFT adapters for a Hugging Face folder: read without unpickling or running anything, checked against the base
model, and merged into its weights with peft before export.

An adapter is the folder peft's `save_pretrained` writes: adapter_config.json and adapter_model.safetensors. Its
tensors decide whether it fits: each names a module the base has, and a LoRA pair's shapes are the adapted layer's.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.digest import folder_hash
from edgekit.errors import MissingBackend, UserError, gist
from edgekit.ingest.folder import json_file

log = logging.getLogger("edgekit")
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLED_WEIGHTS = "adapter_model.bin"
CONFIG_LIMIT = 1 << 20  # bytes: peft writes a few hundred
MERGEABLE = {"LORA": "lora_", "LOHA": "hada_", "LOKR": "lokr_", "IA3": "ia3_"}  # peft type → its tensors' prefix
LORA_INITS = (True, False, "gaussian", "eva", "orthogonal")  # initialisations that leave the base weights as they are
PEFT_PREFIX = "base_model.model."  # peft saves keys relative to its wrapper
PLAIN_NAME = re.compile(r"\^?[\w.\-]+\$?")  # a module name peft matches as a pattern, without quantifiers or groups
NAME_LISTS = ("modules_to_save", "feedforward_modules")  # fields peft turns into regular expressions
SELECTORS = ("target_modules", "exclude_modules", "layers_to_transform", "layers_pattern")  # replaced by the tensors


@dataclass(frozen=True)
class Adapter:
    """A checked adapter folder: its config, its tensors' shapes (keys relative to the base model) and its hash."""

    folder: Path
    config: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]
    sha256: str

    @property
    def peft_type(self) -> str:
        return self.config["peft_type"]

    def record(self) -> dict[str, Any]:
        """What the manifest's provenance keeps of it."""
        targets = self.config.get("target_modules")
        return {"path": str(self.folder), "sha256": self.sha256, "peft_type": self.peft_type, "rank": self.config.get("r"),
                "target_modules": sorted(targets) if isinstance(targets, list) else targets,
                "base_model": self.config.get("base_model_name_or_path")}


def read_adapter(folder: str | Path) -> Adapter:
    """The adapter in `folder`, its config and tensor shapes checked; no weights are loaded yet."""
    path = Path(folder)
    if not path.is_dir():
        raise UserError(f"adapter {path}: no such folder")
    if not (path / CONFIG_FILE).is_file():
        raise UserError(f"adapter {path}: no {CONFIG_FILE} in it: not a PEFT adapter folder (peft's save_pretrained writes one)")
    if not (path / WEIGHTS_FILE).is_file():
        if (path / PICKLED_WEIGHTS).is_file():
            raise UserError(f"adapter {path}: its weights are {PICKLED_WEIGHTS}, a pickle, which edgekit never unpickles: "
                            f"save the adapter with safe_serialization=True ({WEIGHTS_FILE})")
        raise UserError(f"adapter {path}: no {WEIGHTS_FILE} in it")
    config = _config(path / CONFIG_FILE)
    shapes = _tensor_shapes(path / WEIGHTS_FILE)
    largest = max(max(shape, default=1) for shape in shapes.values())  # a rank beyond it would only allocate memory
    ranks = [config.get("r", 0), *(config.get("rank_pattern") or {}).values()]
    if bad := [rank for rank in ranks if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank <= largest]:
        raise UserError(f"adapter {path}: {CONFIG_FILE} sets rank {bad[0]!r}; a rank is a whole number no larger than "
                        f"its tensors' largest dimension ({largest})")
    return Adapter(path, config, shapes, folder_hash(path))


def merge_adapters(base: Any, base_folder: Path, adapters: list[Adapter]) -> Any:
    """`base` (the transformers model of `base_folder`) with each adapter merged into its weights, in the order given."""
    peft = _peft()
    for adapter in adapters:
        _check_base_name(adapter, base_folder)
        _check_fits(adapter, base)
        config = _peft_config(peft, adapter)
        try:
            adapted = peft.PeftModel.from_pretrained(base, str(adapter.folder), config=config, strict_adapter_check="error")
            base = adapted.merge_and_unload(safe_merge=True)
        except Exception as error:  # an adapter from anyone: any failure to apply it is the adapter's
            raise UserError(f"adapter {adapter.folder}: peft cannot merge it into {base_folder}: {gist(error)}") from None
    return base


def _peft():
    try:
        import peft
    except ImportError:
        raise MissingBackend("peft", "hf", "--adapter") from None
    return peft


def _config(file: Path) -> dict[str, Any]:
    """adapter_config.json, refused when it is huge, not a JSON object, of a kind peft cannot merge, or mistyped."""
    size = file.stat().st_size
    if size > CONFIG_LIMIT:
        raise UserError(f"{file}: {size} bytes, more than the {CONFIG_LIMIT} an adapter config may take")
    try:
        config = json.loads(file.read_bytes())
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError; RecursionError: deep nesting
        raise UserError(f"{file} is not valid JSON: {gist(error) or type(error).__name__}") from None
    if not isinstance(config, dict):
        raise UserError(f"{file}: expected a JSON object, got {type(config).__name__}")
    kind = config.get("peft_type")
    if not isinstance(kind, str) or kind not in MERGEABLE:
        raise UserError(f"{file}: peft_type {kind!r} is not one edgekit merges into the weights (it merges "
                        f"{', '.join(MERGEABLE)}; prompt-learning adapters such as PROMPT_TUNING add inputs instead)")
    for field, allowed in (("base_model_name_or_path", (str, type(None))), ("target_modules", (str, list, type(None))),
                           ("rank_pattern", (dict, type(None))), ("alpha_pattern", (dict, type(None))),
                           *((name, (list, type(None))) for name in NAME_LISTS)):
        if not isinstance(config.get(field), allowed):
            raise UserError(f"{file}: {field} is a {type(config[field]).__name__}, expected "
                            f"{' or '.join('null' if option is type(None) else option.__name__ for option in allowed)}")
    names = [*(config.get("rank_pattern") or {}), *(config.get("alpha_pattern") or {}),
             *(name for field in NAME_LISTS for name in config.get(field) or ())]
    if kind == "IA3":  # its patterns are kept: feedforward_modules must name a subset of them
        targets = config.get("target_modules")
        names += [targets] if isinstance(targets, str) else targets or []
    if bad := [name for name in names if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name)]:
        raise UserError(f"{file}: {bad[0]!r} is not a plain module name (letters, digits, _ . -): edgekit does not run "
                        "an adapter's regular expressions")
    if kind == "LORA" and config.get("init_lora_weights", True) not in LORA_INITS:
        raise UserError(f"{file}: init_lora_weights {config['init_lora_weights']!r}: edgekit merges LoRA initialised "
                        f"as {', '.join(map(str, LORA_INITS))} only; PiSSA, OLoRA, LoftQ and the like change the base "
                        "weights when the adapter is made, so it fits only that changed base: save it converted to "
                        "plain LoRA (peft's path_initial_model_for_weight_conversion)")
    if config.get("megatron_config") is not None:
        raise UserError(f"{file}: a Megatron adapter (megatron_config): edgekit merges into Hugging Face models only")
    return config


def _tensor_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, from the safetensors header alone; keys without peft's wrapper prefix."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as weights:
            shapes = {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}
    except Exception as error:  # a file from anyone: any failure to read it is the file's
        raise UserError(f"{file}: not a readable safetensors file ({gist(error)}): copy it again or save it anew") from None
    if not shapes:
        raise UserError(f"{file}: holds no tensors")
    return {key.removeprefix(PEFT_PREFIX): shape for key, shape in shapes.items()}


def _check_base_name(adapter: Adapter, folder: Path) -> None:
    """Warn when the adapter names another base than `folder`. A name cannot be checked across machines (a hub id
    here, a local path there), so it only warns: the tensors decide."""
    named = adapter.config.get("base_model_name_or_path")
    if not named:
        return
    own = json_file(folder / "config.json", dict).get("_name_or_path")
    known = [name for name in (str(folder), own) if isinstance(name, str) and name]
    if _tail(named) in {_tail(name) for name in known} or _same_folder(named, folder):
        return
    log.warning("adapter %s was made for %s, not %s (%s): merging it, as its tensors fit", adapter.folder, named, folder,
                own or "its config names no model")


def _tail(name: str) -> str:
    return name.rstrip("/\\").replace("\\", "/").rpartition("/")[2].lower()


def _same_folder(named: str, folder: Path) -> bool:
    try:
        return Path(named).expanduser().resolve() == folder.resolve()
    except (OSError, ValueError):  # not a path here (a NUL in it, a loop)
        return False


def _check_fits(adapter: Adapter, base: Any) -> None:
    """Every tensor names a module of `base` (an adapter's own, or a weight it replaces with one of the same shape),
    and a LoRA pair on a linear layer has that layer's shapes: one line naming the module and the shapes otherwise."""
    import torch

    prefix = MERGEABLE[adapter.peft_type]
    name = adapter.folder
    for key, shape in adapter.shapes.items():
        parts = key.split(".")
        module, depth = base, 0
        while depth < len(parts) - 1 and (child := dict(module.named_children()).get(parts[depth])) is not None:
            module, depth = child, depth + 1
        path, rest = ".".join(parts[:depth]), ".".join(parts[depth:])
        weights = dict(module.named_parameters(recurse=False))
        if rest in weights:  # a whole weight (modules_to_save, a saved embedding)
            if tuple(weights[rest].shape) != shape:
                raise UserError(f"adapter {name}: {key} is {_dims(shape)}, the base's is {_dims(weights[rest].shape)}: "
                                "the adapter was made for another model")
            continue
        if not path or not rest.startswith(prefix):
            raise UserError(f"adapter {name}: its tensor {key} does not fit the base ({type(base).__name__}): "
                            f"the base has no module {'.'.join(parts[:depth + 1])}")
        if isinstance(module, torch.nn.Linear) and rest in ("lora_A.weight", "lora_B.weight"):
            side, wanted = (1, module.in_features) if rest == "lora_A.weight" else (0, module.out_features)
            if len(shape) != 2 or shape[side] != wanted:
                raise UserError(f"adapter {name}: {path}.{rest.removesuffix('.weight')} is {_dims(shape)}, but the base's "
                                f"{path} is Linear {module.in_features}→{module.out_features}: the adapter was made for "
                                "another model")


def _dims(shape: Any) -> str:
    return "×".join(str(int(size)) for size in shape) or "scalar"


def _peft_config(peft: Any, adapter: Adapter) -> Any:
    """peft's config for the adapter, the modules it adapts named by its tensors (peft does not run its patterns)."""
    fields = {key: value for key, value in adapter.config.items() if key != "runtime_config"}
    fields["task_type"] = None  # merged into the bare transformers model, whatever head it was trained with
    if adapter.peft_type != "IA3":
        marker = f".{MERGEABLE[adapter.peft_type]}"
        adapted = sorted({key.partition(marker)[0] for key in adapter.shapes if marker in key})
        fields.update(dict.fromkeys(SELECTORS), target_modules=adapted)
    if adapter.peft_type == "LORA":
        fields["init_lora_weights"] = False  # the weights come from the file: no initialisation runs
    config_class = peft.PEFT_TYPE_TO_CONFIG_MAPPING[adapter.peft_type]
    try:
        return config_class.from_peft_type(**config_class.check_kwargs(**fields))
    except Exception as error:  # a config from anyone: any value peft refuses is the config's
        raise UserError(f"{adapter.folder / CONFIG_FILE}: peft refuses it: {gist(error)}") from None
