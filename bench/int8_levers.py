"""Levers tried on onnxruntime's int8 speed, each timed side by side with the graph it changes.

``bench/speed.py`` measures the shipped graphs; this script asks whether more changes
would move its ratios (Lite0, 224 px, batch 32 by default, the same cached ONNX files):

- ``depthwise_float``: the int8 member with its 16 depthwise convs left float (their weights
  dequantized into float initializers, so onnxruntime cannot fuse them into ``QLinearConv``
  and runs them in fp32 between a dequantize and a quantize). Depthwise convs take ~40% of
  the int8 member's time for ~5% of its multiply-adds; is fp32 faster for them?
- ``chunk<N>``: the 32-image batch run as 32/N calls of N images (smaller activations stay in
  cache); applied to fp32, the int8 member and the EoQ alike.
- ``uint8_weights``: the int8 member with its weights stored as uint8 (``w + 128``, zero point
  128): the same integers, but onnxruntime picks its uint8 x uint8 kernels instead of uint8 x
  int8 ones. On CPUs without VNNI the u8s8 kernel's 16-bit intermediate sums are its limit;
  is u8u8 faster there?
- ``parallel_members``: the merged 5-member graph with onnxruntime's parallel executor
  (members as independent branches, ``inter_op`` threads = cores, one intra-op thread each)
  instead of every op spread over all cores.

    python bench/int8_levers.py --out bench/results/int8_levers_cpu.json

Images/s, median of ``--repeats`` windows; every variant is timed in each round, in turn.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import speed  # bench/speed.py, beside this script: cached models, sessions
from machine import describe_machine, machine_line  # bench/machine.py, beside this script
from onnx import numpy_helper


def _constant_tensors(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Every constant tensor by name, initializers and Constant nodes' values alike (the
    objects in the graph, so editing one edits the graph)."""
    tensors = {n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == "Constant"}
    tensors.update({i.name: i for i in graph.initializer})
    return tensors


def _dequantized_convs(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """Each Conv whose weight is the output of a DequantizeLinear, with that DequantizeLinear."""
    producers = {out: node for node in graph.node for out in node.output}
    pairs = []
    for node in graph.node:
        dq = producers.get(node.input[1]) if node.op_type == "Conv" else None
        if dq is not None and dq.op_type == "DequantizeLinear":
            pairs.append((node, dq))
    return pairs


def float_depthwise(src: Path, dst: Path) -> int:
    """Write ``src`` with every grouped conv's dequantized weight as a float initializer;
    returns how many convs changed. Activations around them keep their Q/DQ nodes."""
    model = onnx.load(str(src))
    graph = model.graph
    tensors = _constant_tensors(graph)

    def constant(name: str) -> np.ndarray:
        return numpy_helper.to_array(tensors[name]).astype(np.float32)

    changed = 0
    for node, dq in _dequantized_convs(graph):
        if next((a.i for a in node.attribute if a.name == "group"), 1) == 1:
            continue
        q, scale = constant(dq.input[0]), constant(dq.input[1])
        zero = constant(dq.input[2]) if len(dq.input) > 2 else np.float32(0)
        shape = [-1] + [1] * (q.ndim - 1)  # per-output-channel along axis 0
        weight = (q - np.reshape(zero, shape if zero.ndim else ())) * np.reshape(scale, shape)
        name = f"{node.input[1]}_float"
        graph.initializer.append(numpy_helper.from_array(weight.astype(np.float32), name))
        node.input[1] = name
        changed += 1
    onnx.save(model, str(dst))
    return changed


def uint8_weights(src: Path, dst: Path) -> int:
    """Write ``src`` with every conv's int8 weight (and its zero point) shifted by 128 into
    uint8: the dequantized weights are unchanged. Returns how many convs changed."""
    model = onnx.load(str(src))
    tensors = _constant_tensors(model.graph)
    shifted: set[str] = set()  # a zero point can be shared by several convs: shift it once

    def shift(name: str) -> None:
        tensor = tensors[name]
        if name in shifted or tensor.data_type != onnx.TensorProto.INT8:
            return
        values = numpy_helper.to_array(tensor).astype(np.int16) + 128
        tensor.CopyFrom(numpy_helper.from_array(values.astype(np.uint8), tensor.name))
        shifted.add(name)

    changed = 0
    for _, dq in _dequantized_convs(model.graph):
        if len(dq.input) < 3:
            continue
        shift(dq.input[0])
        shift(dq.input[2])
        changed += 1
    onnx.save(model, str(dst))
    return changed


def _runner(path: Path, threads: int, chunk: int, parallel: bool = False) -> Callable:
    """A callable running a batch through ``path`` in calls of ``chunk`` images."""
    session = speed._session(path, threads, parallel=parallel)
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> list:
        return [session.run(None, {name: x[i : i + chunk]})[0] for i in range(0, len(x), chunk)]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--chunks", type=int, nargs="*", default=[8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from qtdog_train.models.backbones import DEFAULT_BACKBONE

    paths = speed._build(DEFAULT_BACKBONE, args.size)
    dw_path = paths["int8"].with_name("int8_depthwise_float.onnx")
    n_dw = float_depthwise(paths["int8"], dw_path)
    u8_path = paths["int8"].with_name("int8_uint8_weights.onnx")
    n_u8 = uint8_weights(paths["int8"], u8_path)
    runners = {
        "onnx_fp32": _runner(paths["fp32"], args.threads, args.batch),
        "onnx_int8": _runner(paths["int8"], args.threads, args.batch),
        "onnx_int8_x5": _runner(paths["int8_x5"], args.threads, args.batch),
        "depthwise_float_int8": _runner(dw_path, args.threads, args.batch),
        "uint8_weights_int8": _runner(u8_path, args.threads, args.batch),
        "parallel_members_int8_x5": _runner(paths["int8_x5"], args.threads, args.batch, True),
    }
    for chunk in args.chunks:
        for model in ("fp32", "int8", "int8_x5"):
            runners[f"chunk{chunk}_{model}"] = _runner(paths[model], args.threads, chunk)
    x = np.random.default_rng(0).standard_normal((args.batch, 3, args.size, args.size))
    x = x.astype(np.float32)
    for run in runners.values():
        run(x)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            rates[name].append(speed._window(run, x, args.seconds)[0])
    medians = {name: statistics.median(r) for name, r in rates.items()}
    for name, rate in medians.items():
        print(f"{name:28s} {rate:8.1f} img/s")
    result = {
        "images_per_s": medians,
        "depthwise_convs_made_float": n_dw,
        "convs_given_uint8_weights": n_u8,
        "size": args.size,
        "batch": args.batch,
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": machine_line(describe_machine()),
        "date": time.strftime("%Y-%m-%d"),
    }
    speed.report(result, args.out)


if __name__ == "__main__":
    main()
