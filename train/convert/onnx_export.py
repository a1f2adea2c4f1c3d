"""ONNX export of the int8 graph, its int8 coverage, and merging members into one graph."""

from __future__ import annotations

import tempfile
import warnings
from collections import Counter
from pathlib import Path

import onnx
import torch
from onnx import compose, helper

from qtdog_sdk.format import ONNX_INPUT_NAME, ONNX_OUTPUT_NAME

ONNX_OPSET = 18


def export_onnx(graph: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Export a converted (Q/DQ) graph with the dynamo exporter; the batch stays dynamic.

    The graph is traced at the example's fixed batch and the batch is freed in the ONNX file
    afterwards (``free_batch_dimension``): tracing with a symbolic batch costs about twice as
    long (symbolic shape reasoning over every Q/DQ node: 15.9-17.1 s against 8.2-9.7 s for a
    Lite0 int8 member, side by side on a 2-core Zen 3) and gives the same graph. Where the
    batch cannot be freed, or onnxruntime answers differently one image later, the export is
    redone with a symbolic batch.
    """
    # Channels-last activations make a fixed-batch trace spell the classifier's flatten as a
    # strided gather with the batch in its indices (convert_member hands over contiguous weights).
    example = example.contiguous()
    _dynamo_export(graph, example, path, dynamic_batch=False)
    if not free_batch_dimension(path, len(example)) or not _batch_independent(path, example):
        _dynamo_export(graph, example, path, dynamic_batch=True)
    strip_metadata(path)
    fold_pads_into_convs(path)
    return path


def _dynamo_export(
    graph: torch.nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool
) -> None:
    with warnings.catch_warnings():
        # Exported graphs keep training=True even after move_exported_model_to_eval (which is
        # what actually switches their ops); the exporter's "training mode" warning is noise.
        warnings.filterwarnings("ignore", message="Exporting a model while it is in training mode")
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            input_names=[ONNX_INPUT_NAME],
            output_names=[ONNX_OUTPUT_NAME],
            dynamic_shapes=({0: "batch"},) if dynamic_batch else None,
            opset_version=ONNX_OPSET,
            verbose=False,
        )
    program.save(str(path))


#: Ops that take a shape as an input or attribute: a fixed-batch trace may have written its
#: batch into them. Only a Reshape with a constant, batch-leading target is rewritten.
_SHAPE_OPS = {"Reshape", "Expand", "Tile", "ConstantOfShape", "Resize", "Slice", "Split"}


def free_batch_dimension(path: Path, batch: int) -> bool:
    """Turn a graph traced at a fixed ``batch`` into one with a symbolic ``batch`` dimension.

    Inputs and outputs get dimension 0 named ``batch``, intermediate shape annotations are
    dropped (onnxruntime infers them), and each Reshape whose constant target starts with
    ``batch`` (a CNN's flatten before its classifier) gets -1 there. Returns False, leaving
    the file as it was, if another op that takes a shape could carry the traced batch; ops
    that hold it in other constants (a Gather's indices) are caught by running the file.
    """
    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    targets: dict[str, onnx.TensorProto] = {}
    for node in graph.node:
        if node.op_type not in _SHAPE_OPS:
            continue
        if node.op_type != "Reshape" or node.input[1] not in inits:
            return False
        shape = onnx.numpy_helper.to_array(inits[node.input[1]])
        if shape.ndim != 1 or len(shape) == 0 or shape[0] != batch or -1 in shape[1:]:
            return False
        targets[node.input[1]] = inits[node.input[1]]
    for tensor in targets.values():
        shape = onnx.numpy_helper.to_array(tensor).copy()
        shape[0] = -1
        tensor.CopyFrom(onnx.numpy_helper.from_array(shape, tensor.name))
    for value in (*graph.input, *graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "batch"
    del graph.value_info[:]
    onnx.save(model, str(path))
    return True


def _batch_independent(path: Path, example: torch.Tensor) -> bool:
    """Whether the file gives each image the same output at the traced batch and one larger."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a refused batch is an answer here, not an error to print
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    images = example.detach().cpu().numpy()
    try:
        alone = session.run(None, {ONNX_INPUT_NAME: images})[0]
        grown = session.run(None, {ONNX_INPUT_NAME: np.concatenate([images, images[:1]])})[0]
    except Exception:  # onnxruntime refuses the larger batch: the trace kept it somewhere
        return False
    expected = np.concatenate([alone, alone[:1]])
    return grown.shape == expected.shape and np.allclose(grown, expected, rtol=1e-4, atol=1e-4)


def strip_metadata(path: Path) -> Path:
    """Drop the exporter's per-node metadata (stack traces, module paths): ~11% of a Lite0 int8 file."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    model.producer_name = "qtdog"
    onnx.save(model, str(path))
    return path


def optimized_graph(path: Path) -> onnx.ModelProto:
    """The graph onnxruntime actually runs: the QDQ groups fused into QLinearConv /
    QLinearAdd (the extended level, before the layout changes of the full one)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def optimized_op_counts(path: Path) -> Counter[str]:
    """Operator counts of the graph onnxruntime actually runs (after its QDQ fusions)."""
    return Counter(node.op_type for node in optimized_graph(path).graph.node)


def int8_conv_coverage(path: Path) -> tuple[int, int]:
    """(convs onnxruntime runs as QLinearConv, all convs)."""
    counts = optimized_op_counts(path)
    int8 = counts["QLinearConv"]
    return int8, int8 + counts["Conv"] + counts["FusedConv"]


def member_prefix(index: int) -> str:
    """What ``merge_members`` puts before every name of member ``index`` in the merged graph."""
    return f"m{index}_"


def merge_members(paths: list[Path], out: Path) -> Path:
    """One graph holding every member; output ``logits`` is ``[batch, members, classes]``.

    One session over one graph runs the members back to back on a shared
    thread pool, instead of several sessions contending for the cores.
    """
    graphs = []
    for i, path in enumerate(paths):
        model = onnx.load(str(path))
        model = compose.add_prefix(model, prefix=member_prefix(i))
        graphs.append(model)
    base = graphs[0]
    nodes, initializers, value_info = [], [], []
    for i, model in enumerate(graphs):
        g = model.graph
        for node in g.node:
            node.input[:] = [
                ONNX_INPUT_NAME if name == member_prefix(i) + ONNX_INPUT_NAME else name
                for name in node.input
            ]
            nodes.append(node)
        initializers.extend(g.initializer)
        value_info.extend(g.value_info)
        nodes.append(
            helper.make_node(
                "Unsqueeze",
                [member_prefix(i) + ONNX_OUTPUT_NAME, "qtdog_axis1"],
                [member_prefix(i) + "logits_3d"],
                name=member_prefix(i) + "unsqueeze",
            )
        )
    initializers.append(helper.make_tensor("qtdog_axis1", onnx.TensorProto.INT64, [1], [1]))
    nodes.append(
        helper.make_node(
            "Concat",
            [member_prefix(i) + "logits_3d" for i in range(len(graphs))],
            [ONNX_OUTPUT_NAME],
            axis=1,
        )
    )
    first_input = base.graph.input[0]
    classes = base.graph.output[0].type.tensor_type.shape.dim[1]
    output = helper.make_tensor_value_info(
        ONNX_OUTPUT_NAME,
        onnx.TensorProto.FLOAT,
        ["batch", len(graphs), classes.dim_value or "classes"],
    )
    graph_input = helper.make_tensor_value_info(
        ONNX_INPUT_NAME,
        first_input.type.tensor_type.elem_type,
        ["batch", *[d.dim_value for d in first_input.type.tensor_type.shape.dim[1:]]],
    )
    merged_graph = helper.make_graph(
        nodes, "qtdog_ensemble", [graph_input], [output], initializers, value_info=value_info
    )
    opsets = {op.domain: op.version for model in graphs for op in model.opset_import}
    merged = helper.make_model(
        merged_graph,
        opset_imports=[helper.make_opsetid(domain, version) for domain, version in opsets.items()],
        producer_name="qtdog",
    )
    merged.ir_version = base.ir_version
    onnx.checker.check_model(merged)
    onnx.save(merged, str(out))
    return out


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def fold_pads_into_convs(path: Path) -> int:
    """Rewrite ``DQ -> Pad(0) -> Q -> DQ -> Conv`` as ``DQ -> Conv(pads=...)``; returns how many.

    TF-"same" padding of stride-2 convs is asymmetric, which PyTorch expresses
    as a separate pad; onnxruntime then runs that Pad in float between a
    dequantize and a requantize of the whole activation (over half of an
    int8 Lite0's time). ONNX Conv takes asymmetric pads itself, and
    QLinearConv pads with the zero point, which is exactly the value 0 the
    Pad wrote, so the rewrite changes no output.
    """
    model = onnx.load(str(path))
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    users = _consumers(graph)
    inits = {t.name: t for t in graph.initializer}
    removed: set[int] = set()
    folded = 0
    for pad in list(graph.node):
        if pad.op_type != "Pad" or len(pad.input) < 2 or pad.input[1] not in inits:
            continue
        mode = next((a.s.decode() for a in pad.attribute if a.name == "mode"), "constant")
        if mode != "constant":
            continue
        if len(pad.input) > 2 and pad.input[2]:
            value = inits.get(pad.input[2])
            if value is None or onnx.numpy_helper.to_array(value).any():
                continue
        source = producers.get(pad.input[0])
        q_users = users.get(pad.output[0], [])
        if (
            source is None
            or source.op_type != "DequantizeLinear"
            or len(q_users) != 1
            or q_users[0].op_type != "QuantizeLinear"
        ):
            continue
        quant = q_users[0]
        dq_users = users.get(quant.output[0], [])
        if len(dq_users) != 1 or dq_users[0].op_type != "DequantizeLinear":
            continue
        dequant = dq_users[0]
        convs = users.get(dequant.output[0], [])
        if not convs or any(c.op_type != "Conv" for c in convs):
            continue
        pads = onnx.numpy_helper.to_array(inits[pad.input[1]]).tolist()
        rank = len(pads) // 2
        if rank != 4 or any(pads[i] or pads[i + rank] for i in (0, 1)):
            continue  # only spatial padding of NCHW
        for conv in convs:
            attr = next((a for a in conv.attribute if a.name == "pads"), None)
            current = list(attr.ints) if attr is not None else [0, 0, 0, 0]
            new = [
                current[0] + pads[2],
                current[1] + pads[3],
                current[2] + pads[6],
                current[3] + pads[7],
            ]
            if attr is None:
                conv.attribute.append(helper.make_attribute("pads", new))
            else:
                del attr.ints[:]
                attr.ints.extend(new)
            conv.input[0] = source.output[0]
        removed.update({id(pad), id(quant), id(dequant)})
        folded += 1
    if folded:
        kept = [node for node in graph.node if id(node) not in removed]
        del graph.node[:]
        graph.node.extend(kept)
        used = {name for node in graph.node for name in node.input}
        unused = [t for t in graph.initializer if t.name not in used]
        for tensor in unused:
            graph.initializer.remove(tensor)
        onnx.save(model, str(path))
    return folded
