"""ONNX export of the int8 graph, its int8 coverage, and merging members into one graph."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import onnx
import torch
from onnx import compose, helper

from qtdog_sdk.format import ONNX_INPUT_NAME, ONNX_OUTPUT_NAME

ONNX_OPSET = 18


def export_onnx(graph: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Export a converted (Q/DQ) graph with the dynamo exporter; batch stays dynamic."""
    program = torch.onnx.export(
        graph,
        (example,),
        dynamo=True,
        input_names=[ONNX_INPUT_NAME],
        output_names=[ONNX_OUTPUT_NAME],
        dynamic_shapes=({0: "batch"},),
        opset_version=ONNX_OPSET,
        verbose=False,
    )
    program.save(str(path))
    strip_metadata(path)
    return path


def strip_metadata(path: Path) -> Path:
    """Drop the exporter's per-node metadata (stack traces, module paths): ~11% of a Lite0 int8 file."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    model.producer_name = "qtdog"
    onnx.save(model, str(path))
    return path


def optimized_op_counts(path: Path) -> Counter[str]:
    """Operator counts of the graph onnxruntime actually runs (after its QDQ fusions)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
    return Counter(node.op_type for node in optimized.graph.node)


def int8_conv_coverage(path: Path) -> tuple[int, int]:
    """(convs onnxruntime runs as QLinearConv, all convs)."""
    counts = optimized_op_counts(path)
    int8 = counts["QLinearConv"]
    return int8, int8 + counts["Conv"] + counts["FusedConv"]


def merge_members(paths: list[Path], out: Path) -> Path:
    """One graph holding every member; output ``logits`` is ``[batch, members, classes]``.

    One session over one graph runs the members back to back on a shared
    thread pool, instead of several sessions contending for the cores.
    """
    graphs = []
    for i, path in enumerate(paths):
        model = onnx.load(str(path))
        model = compose.add_prefix(model, prefix=f"m{i}_")
        graphs.append(model)
    base = graphs[0]
    nodes, initializers, value_info = [], [], []
    for i, model in enumerate(graphs):
        g = model.graph
        for node in g.node:
            node.input[:] = [
                ONNX_INPUT_NAME if name == f"m{i}_{ONNX_INPUT_NAME}" else name
                for name in node.input
            ]
            nodes.append(node)
        initializers.extend(g.initializer)
        value_info.extend(g.value_info)
        nodes.append(
            helper.make_node(
                "Unsqueeze",
                [f"m{i}_{ONNX_OUTPUT_NAME}", "qtdog_axis1"],
                [f"m{i}_logits_3d"],
                name=f"m{i}_unsqueeze",
            )
        )
    initializers.append(helper.make_tensor("qtdog_axis1", onnx.TensorProto.INT64, [1], [1]))
    nodes.append(
        helper.make_node(
            "Concat", [f"m{i}_logits_3d" for i in range(len(graphs))], [ONNX_OUTPUT_NAME], axis=1
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
