"""Read PyTorch sources: `file.py:factory`, TorchScript archives, torch.export `.pt2` files."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import zipfile
from pathlib import Path
from typing import Any

from edgekit.digest import file_sha256
from edgekit.errors import MissingBackend, UserError, gist
from edgekit.model import Format, Model
from edgekit.spec import TensorSpec, merge_specs


def _torch():
    try:
        import torch
    except ImportError:
        raise MissingBackend("torch", "torch", "PyTorch models") from None
    return torch


def read_factory(path: Path, factory: str, input_specs: tuple[TensorSpec, ...]) -> Model:
    """Import `path`, call `factory()`; it returns a module, or (module, example inputs)."""
    torch = _torch()
    if not path.is_file():
        raise UserError(f"model not found: {path}")
    module_name = f"edgekit_user_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    user_module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = user_module
    try:
        spec.loader.exec_module(user_module)
    except (Exception, SystemExit) as error:  # sys.exit() in user code is a failure, not edgekit's exit
        raise UserError(f"{path}: importing it raised {type(error).__name__}: {error}") from error
    function = getattr(user_module, factory, None)
    if not callable(function):
        raise UserError(f"{path} has no callable '{factory}'")
    try:
        made = function()
    except (Exception, SystemExit) as error:
        raise UserError(f"{path}:{factory}() raised {type(error).__name__}: {error}") from error
    module, examples = made if isinstance(made, tuple) else (made, None)
    if not isinstance(module, torch.nn.Module):
        raise UserError(f"{path}:{factory}() returned {type(module).__name__}, expected an nn.Module or (module, example_inputs)")
    digest = hashlib.sha256(file_sha256(path).encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return _torch_model(module.eval(), _as_tuple(examples), input_specs, f"{path}:{factory}", digest.hexdigest())


def read_torchscript(path: Path, input_specs: tuple[TensorSpec, ...]) -> Model:
    """Load a TorchScript archive (no arbitrary unpickling); input specs must come from --input."""
    torch = _torch()
    kind = _archive_kind(path)
    if kind == "pickle":
        raise UserError(
            f"{path} is a pickled PyTorch object, not TorchScript; edgekit does not unpickle arbitrary "
            "objects: give a file.py:factory that builds the module and loads its weights (weights_only=True)"
        )
    if kind != "torchscript":
        raise UserError(f"{path} is not a TorchScript archive")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        raise UserError(f"{path}: cannot load TorchScript: {gist(error)}") from error
    if not input_specs:
        raise UserError(f"{path}: TorchScript holds no input shapes; give them with --input name:1x3x224x224:float32")
    digest = file_sha256(path)
    return _torch_model(module.eval(), None, input_specs, str(path), digest)


def read_exported(path: Path, input_specs: tuple[TensorSpec, ...], trust_remote_code: bool = False) -> Model:
    """Load a torch.export `.pt2`; specs come from the program's placeholders. Unless `trust_remote_code`, the archive
    must be plain data (edgekit.ingest.pt2): torch.export.load runs the pickles and Python the file carries."""
    torch = _torch()
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is not a torch.export .pt2 archive")
    if not trust_remote_code:
        from edgekit.ingest.pt2 import check_plain_archive

        check_plain_archive(path, torch)
    try:
        program = torch.export.load(str(path))
        module = program.module()
    except Exception as error:
        raise UserError(f"{path}: cannot load the exported program: {gist(error)}") from error
    user_inputs = program.graph_signature.user_inputs
    nodes = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    own = []
    for name in user_inputs:
        value = nodes[name].meta["val"]
        dims = tuple(int(d) if str(d).lstrip("-").isdigit() else str(d) for d in value.shape)
        own.append(TensorSpec(name, dims, str(value.dtype).removeprefix("torch.")))
    inputs = merge_specs(tuple(own), input_specs, str(path))
    examples = tuple(_example_tensor(spec) for spec in inputs)
    outputs = _output_specs(module, examples, inputs)
    digest = file_sha256(path)
    return Model(
        Format.EXPORTED, inputs, outputs, module=program, example_inputs=examples,
        meta={"content_hash": digest, "source_hash": digest, "source": str(path), "passes": [], "precision": "fp32"},
    )


def _archive_kind(path: Path) -> str:
    if not zipfile.is_zipfile(path):
        return "unknown"
    names = zipfile.ZipFile(path).namelist()
    if any("/code/" in name for name in names):
        return "torchscript"
    if any(name.endswith("data.pkl") for name in names):
        return "pickle"
    return "unknown"


def _as_tuple(examples: Any) -> tuple | None:
    if examples is None:
        return None
    if isinstance(examples, dict):
        return tuple(examples.values())
    return tuple(examples) if isinstance(examples, (tuple, list)) else (examples,)


def forward_names(module) -> list[str]:
    """The names of `module.forward`'s positional inputs."""
    schema = getattr(module.forward, "schema", None)
    if schema is not None:  # TorchScript
        return [arg.name for arg in schema.arguments if arg.name != "self"]
    params = inspect.signature(module.forward).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _torch_model(module, examples: tuple | None, input_specs: tuple[TensorSpec, ...], source: str, digest: str) -> Model:
    names = forward_names(module)
    if examples is not None:
        own = tuple(
            TensorSpec(name, tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))
            for name, tensor in zip(names, examples)
        )
        inputs = merge_specs(own, input_specs, source)
    elif input_specs:
        inputs = input_specs
    else:
        raise UserError(f"{source}: no example inputs and no --input; give the input shapes as --input name:1x3x32x32:float32")
    unknown = [spec.name for spec in inputs if spec.name not in names]
    if unknown and len(inputs) != len(names):
        raise UserError(f"{source}: --input names {', '.join(unknown)}, but forward() takes {', '.join(names)}")
    sizes = _example_sizes(inputs, examples)
    run_examples = tuple(_example_tensor(spec, sizes) for spec in inputs)
    outputs = _output_specs(module, run_examples, inputs)
    return Model(
        Format.TORCH, inputs, outputs, module=module, example_inputs=run_examples,
        meta={"content_hash": digest, "source_hash": digest, "source": source, "passes": [], "precision": "fp32"},
    )


EXAMPLE_BATCH = 2  # symbolic dims get 2 in examples: torch.export specialises dims of size 1


def _example_sizes(inputs: tuple[TensorSpec, ...], examples: tuple | None) -> dict[str, int]:
    """Symbolic non-batch dims → the factory's example size there (a length or image size the model expects)."""
    sizes: dict[str, int] = {}
    for spec, tensor in zip(inputs, examples or ()):
        if len(tensor.shape) == len(spec.shape):
            sizes.update({dim: int(size) for axis, (dim, size) in enumerate(zip(spec.shape, tensor.shape))
                          if axis > 0 and isinstance(dim, str) and size > 1})
    return sizes


def _example_tensor(spec: TensorSpec, sizes: dict[str, int] | None = None):
    torch = _torch()
    generator = torch.Generator().manual_seed(0)
    shape = spec.concrete_shape(sizes, default=EXAMPLE_BATCH)
    dtype = getattr(torch, spec.dtype)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    return torch.randint(0, 100, shape, generator=generator, dtype=dtype)


def _output_specs(module, examples: tuple, inputs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """Run once to learn output shapes; a dim equal to a symbolic input dim's example size stays symbolic."""
    torch = _torch()
    try:
        with torch.no_grad():
            result = module(*examples)
    except Exception as error:
        shapes = ", ".join(f"{s.name}:{s.shape_text()}:{s.dtype}" for s in inputs)
        raise UserError(f"the model failed on inputs {shapes}: {type(error).__name__}: {str(error).splitlines()[0]}") from error
    results = result if isinstance(result, (tuple, list)) else (result,)
    if isinstance(result, dict):
        results = tuple(result.values())
    symbolic = next((d for spec in inputs for d in spec.shape[:1] if isinstance(d, str)), None)
    specs = []
    for index, tensor in enumerate(results):
        dims = tuple(symbolic if axis == 0 and symbolic and size == EXAMPLE_BATCH else size
                     for axis, size in enumerate(tensor.shape))
        name = "output" if len(results) == 1 else f"output_{index}"
        specs.append(TensorSpec(name, dims, str(tensor.dtype).removeprefix("torch.")))
    return tuple(specs)
