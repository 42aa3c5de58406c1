"""onnx-to-torch: an ONNX model → a PyTorch module (torch.fx GraphModule) with onnx2torch.

The bridge that lets an ONNX model made elsewhere reach the torch-only converters (convert-tflite,
convert-executorch). The module's forward takes the ONNX graph's inputs positionally, in the graph's
order, with the graph's dtypes (an int32 byte input stays int32); the model keeps the ONNX model's
input and output specs. An op onnx2torch has no converter for is refused before converting, naming it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import types
import warnings

from edgekit.errors import MissingBackend, UnsupportedOnTarget, gist
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass, muted_logs

# ops whose onnx2torch converters call torchvision: refused when torchvision cannot load
TORCHVISION_OPS = ("NonMaxSuppression", "RoiAlign")


def _torchvision_loads() -> bool:
    """Whether torchvision imports: a wheel built for another torch (a CUDA one beside a +cpu torch) raises."""
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception:  # RuntimeError "operator torchvision::nms does not exist", OSError …
        return False
    return True


def _onnx2torch():
    """onnx2torch with edgekit's extra converters."""
    onnx2torch = _import_onnx2torch()
    _add_missing_converters()
    return onnx2torch


def _import_onnx2torch():
    """onnx2torch, imported even without a working torchvision (its NMS and RoiAlign converters import it).

    Without one, a stand-in module is put in sys.modules only while onnx2torch imports; those two ops
    are then refused by name (`unsupported_ops`).
    """
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    if importlib.util.find_spec("onnx2torch") is None:
        raise MissingBackend("onnx2torch", "torch", "converting ONNX to PyTorch")
    if _torchvision_loads():
        import onnx2torch
        return onnx2torch
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "torchvision"}
    stand_in = types.ModuleType("torchvision")
    stand_in.ops = types.ModuleType("torchvision.ops")
    stand_in.ops.roi_align = None
    stand_in.__edgekit_stand_in__ = True
    sys.modules.update({"torchvision": stand_in, "torchvision.ops": stand_in.ops})
    try:
        import onnx2torch
    finally:
        for name in ("torchvision", "torchvision.ops"):
            sys.modules.pop(name, None)
        sys.modules.update(saved)
    return onnx2torch


def _add_missing_converters() -> None:
    """Converters edgekit adds where onnx2torch lacks one: GlobalMaxPool (magika's classifier head)."""
    import torch
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    if OperationDescription("", "GlobalMaxPool", 1) in _CONVERTER_REGISTRY:
        return

    class GlobalMaxPool(torch.nn.Module):
        def forward(self, tensor: torch.Tensor) -> torch.Tensor:
            return torch.amax(tensor, dim=tuple(range(2, tensor.dim())), keepdim=True)

    @add_converter(operation_type="GlobalMaxPool", version=1)
    def _global_max_pool(node, graph) -> OperationConverterResult:
        return OperationConverterResult(torch_module=GlobalMaxPool(), onnx_mapping=onnx_mapping_from_node(node=node))


def _has_torchvision() -> bool:
    from onnx2torch.node_converters import nms

    return not getattr(nms.torchvision, "__edgekit_stand_in__", False)


def unsupported_ops(graph) -> list[str]:
    """`op (opset N)` for each distinct top-level node onnx2torch has no converter for, in graph order."""
    _onnx2torch()
    from onnx2torch.node_converters import get_converter

    opsets = {o.domain or "": o.version for o in graph.opset_import}
    opsets.setdefault("", opsets.get("ai.onnx", 0))
    without = () if _has_torchvision() else TORCHVISION_OPS
    found: list[str] = []
    for node in graph.graph.node:
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        version = opsets.get(domain, 0)
        try:
            get_converter(domain=domain, operation_type=node.op_type, version=version)
            if not domain and node.op_type in without:
                raise NotImplementedError("needs torchvision")
        except NotImplementedError:
            name = node.op_type if not domain else f"{domain}.{node.op_type}"
            text = f"{name} (opset {version})"
            if text not in found:
                found.append(text)
    return found


class OnnxToTorch(Pass):
    name = "onnx-to-torch"
    accepts = frozenset({Format.ONNX})
    produces = Format.TORCH
    tolerance = 1e-4
    conversion = True

    def run(self, model: Model, config, ctx: Context) -> Model:
        onnx2torch = _onnx2torch()
        import onnx
        import torch

        from edgekit.ingest.torch import _example_tensor

        graph = onnx.load(str(model.path))  # with its external data, resolved next to the file
        missing = unsupported_ops(graph)
        if missing:
            ops = ", ".join(missing)
            raise UnsupportedOnTarget(f"onnx2torch cannot convert op{'s' if len(missing) > 1 else ''} {ops}")
        try:
            with warnings.catch_warnings(), muted_logs("onnx2torch"):
                warnings.simplefilter("ignore")
                module = onnx2torch.convert(graph).eval()
        except Exception as error:  # a converter may refuse an attribute or a dynamic input
            raise UnsupportedOnTarget(f"onnx2torch cannot convert {model.path.name}: {type(error).__name__}: {gist(error)}") from None
        examples = tuple(_example_tensor(spec) for spec in model.inputs)
        try:
            with torch.no_grad():
                module(*examples)
        except Exception as error:
            raise UnsupportedOnTarget(
                f"the module onnx2torch made from {model.path.name} fails to run: {type(error).__name__}: {gist(error)}"
            ) from None
        digest = hashlib.sha256(f"{model.content_hash}:{self.name}:{self.version}".encode()).hexdigest()
        return model.derive(format=Format.TORCH, files=(), module=module, example_inputs=examples,
                            meta={"content_hash": digest})
