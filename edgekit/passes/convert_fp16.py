"""convert-fp16: float32 → float16 weights and compute with onnxconverter-common, fragile ops kept in fp32."""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.digest import files_sha256
from edgekit.errors import MissingBackend, UserError
from edgekit.ingest.onnx import load_graph, onnx_files
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass, muted_logs

# Kept in fp32 (with Casts around them): fp16 tops out at 65504 and has 11 significant bits, so
# - exponentials and logs overflow or lose their tails: Exp(x > 11.1) is inf, Softmax/LogSoftmax exponentiate;
# - normalizations divide by a variance that underflows fp16 (its smallest normal is 6.1e-5) and
#   square their inputs (Pow, ReduceSumSquare, Sqrt, Reciprocal);
# - reductions over many values stop adding increments below 1/2048 of the running sum.
FRAGILE_OPS = (
    "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt", "Reciprocal",
    "LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization", "SkipSimplifiedLayerNormalization",
    "InstanceNormalization", "GroupNormalization",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp",
)


@dataclass(frozen=True, slots=True)
class ConvertFp16Config:
    keep_io_types: bool = True  # inputs and outputs stay float32, so feeds do not change
    keep_fp32_ops: tuple[str, ...] = FRAGILE_OPS  # added to onnxconverter-common's own block list
    keep_fp32_nodes: tuple[str, ...] = ()


class ConvertFp16(Pass):
    name = "convert-fp16"
    accepts = frozenset({Format.ONNX})
    produces = Format.ONNX
    Config = ConvertFp16Config

    def run(self, model: Model, config: ConvertFp16Config, ctx: Context) -> Model:
        try:
            import onnx
            from onnxconverter_common import float16
        except ImportError:
            raise MissingBackend("onnxconverter-common", "onnx", "fp16 conversion") from None
        graph = load_graph(model.path, with_weights=True)
        names = {node.name for node in graph.graph.node}
        unknown = [name for name in config.keep_fp32_nodes if name not in names]
        if unknown:
            raise UserError(f"keep_fp32_nodes: no node named {', '.join(unknown)} in the model")
        with muted_logs("root", "onnxconverter_common"):
            try:
                converted = float16.convert_float_to_float16(
                    graph, keep_io_types=config.keep_io_types,
                    op_block_list=sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(config.keep_fp32_ops)),
                    node_block_list=list(config.keep_fp32_nodes) or None,
                )
            except ValueError as error:  # "The model is already converted to float16"
                raise UserError(f"convert-fp16: {error}") from None
        # the converter appends new value_info beside the old fp32 entries; stale duplicates make
        # ORT reject the graph (a Cast's output typed both float and float16), so let ORT infer them
        del converted.graph.value_info[:]
        if config.keep_io_types:
            _float_outputs(converted, {o.name for o in graph.graph.output
                                       if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT})
        blocked = set(float16.DEFAULT_OP_BLOCK_LIST) | set(config.keep_fp32_ops)
        _graph_casts_to_fp16(converted, blocked, set(config.keep_fp32_nodes))
        out = ctx.step_dir("convert-fp16") / "model.onnx"
        onnx.save(converted, str(out), save_as_external_data=len(model.files) > 1, location=f"{out.stem}.data")
        files = onnx_files(out)
        return model.derive(files=files, meta={"content_hash": files_sha256(files), "precision": "fp16"})


def _float_outputs(model, float_names: set[str]) -> None:
    """Make outputs that were float32 float32 again.

    onnxconverter-common 1.16 casts an output back to fp16 when the node producing it is in the
    block list (LayerNormalization last, say), despite keep_io_types; drop that trailing Cast.
    """
    import onnx

    graph = model.graph
    for output in graph.output:
        tensor = output.type.tensor_type
        if output.name not in float_names or tensor.elem_type == onnx.TensorProto.FLOAT:
            continue
        cast = next(node for node in graph.node if output.name in node.output)
        feeding = cast.input[0] if cast.op_type == "Cast" else None
        others = [n for n in graph.node if feeding in n.input and n is not cast]
        if feeding and not others and feeding not in {o.name for o in graph.output}:
            producer = next(node for node in graph.node if feeding in node.output)
            producer.output[list(producer.output).index(feeding)] = output.name
            graph.node.remove(cast)
        else:
            cast.output[list(cast.output).index(output.name)] = f"{output.name}_fp16"
            for node in graph.node:
                for index, name in enumerate(node.input):
                    if name == output.name:
                        node.input[index] = f"{output.name}_fp16"
            graph.node.append(onnx.helper.make_node("Cast", [f"{output.name}_fp16"], [output.name],
                                                    name=f"{output.name}_to_fp32", to=onnx.TensorProto.FLOAT))
        tensor.elem_type = onnx.TensorProto.FLOAT


def _graph_casts_to_fp16(model, blocked_ops: set[str], blocked_nodes: set[str]) -> None:
    """Give fp16 compute an fp16 copy of each of the graph's own Cast(to=float) results.

    onnxconverter-common 1.16 leaves those Casts alone, so a mask cast from int64 to float
    (all-MiniLM-L6-v2's attention mask) met an fp16 tensor in a Mul and ORT refused the graph.
    Readers kept in fp32 (blocked ops and nodes, further Casts) keep reading the float result.
    """
    import onnx

    graph = model.graph
    outputs = {output.name for output in graph.output}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for node in list(graph.node):
        to = next((a for a in node.attribute if a.name == "to"), None)
        if node.op_type != "Cast" or to is None or to.i != onnx.TensorProto.FLOAT:
            continue
        result = node.output[0]
        half = [c for c in readers.get(result, [])
                if c.op_type not in blocked_ops and c.name not in blocked_nodes and c.op_type != "Cast"]
        if not half:
            continue
        if len(half) == len(readers[result]) and result not in outputs:
            to.i = onnx.TensorProto.FLOAT16
            continue
        copy = f"{result}_fp16"
        graph.node.append(onnx.helper.make_node("Cast", [node.input[0]], [copy], name=f"{node.name}_fp16",
                                                to=onnx.TensorProto.FLOAT16))
        for consumer in half:
            for index, name in enumerate(consumer.input):
                if name == result:
                    consumer.input[index] = copy
