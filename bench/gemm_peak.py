"""The ceiling int8 can reach over fp32 on this CPU: onnxruntime's own GEMM kernels, bare.

An int8 conv in onnxruntime is an MLAS uint8 x int8 GEMM; an fp32 conv is its SGEMM. Timing
one large matrix product each way (``MatMulInteger`` vs ``MatMul``, 7-bit weights as qtdog
ships them, the same thread count as bench/speed.py) gives multiply-adds per second for both;
their ratio bounds what an int8 member can gain over its fp32 model here, before any conv,
layout or quantize overhead. On AVX-512 VNNI one instruction multiplies and sums int8 pairs
(up to ~4x fp32); on plain AVX2 it takes three, and the ratio can fall to ~1.

    python bench/gemm_peak.py
    python bench/gemm_peak.py --shape 1024 1024 1024 --shape 25088 40 144 --out gemm_peak.json

The last line printed is one JSON object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from machine import describe_machine, machine_line  # bench/machine.py, beside this script
from onnx import TensorProto, helper, numpy_helper
from speed import report  # bench/speed.py: writes --out, prints the last line

# a square product, and one of Lite0's 1x1 convs at 224 px, batch 32 (M = pixels, K -> N channels)
DEFAULT_SHAPES = ((1024, 1024, 1024), (32 * 28 * 28, 40, 144))


def gemm_model(m: int, n: int, k: int, int8: bool, seed: int = 0) -> bytes:
    """One ``[m, k] x [k, n]`` product with a constant weight: float, or uint8 x int8 (7-bit)."""
    rng = np.random.default_rng(seed)
    if int8:
        weight = rng.integers(-64, 64, (k, n)).astype(np.int8)
        op, in_type, out_type = "MatMulInteger", TensorProto.UINT8, TensorProto.INT32
    else:
        weight = rng.standard_normal((k, n)).astype(np.float32)
        op, in_type, out_type = "MatMul", TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "w"], ["y"])],
        "gemm",
        [helper.make_tensor_value_info("a", in_type, [m, k])],
        [helper.make_tensor_value_info("y", out_type, [m, n])],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def gmacs(m: int, n: int, k: int, int8: bool, threads: int, repeats: int) -> float:
    """Median billions of multiply-adds per second over ``repeats`` timed products."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(
        gemm_model(m, n, k, int8), options, providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(1)
    a = (
        rng.integers(0, 256, (m, k)).astype(np.uint8)
        if int8
        else rng.standard_normal((m, k)).astype(np.float32)
    )
    for _ in range(3):
        session.run(None, {"a": a})
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"a": a})
        seconds.append(time.perf_counter() - start)
    return m * n * k / statistics.median(seconds) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shape", type=int, nargs=3, action="append", metavar=("M", "N", "K"), dest="shapes"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for m, n, k in args.shapes or DEFAULT_SHAPES:
        fp32 = gmacs(m, n, k, False, args.threads, args.repeats)
        int8 = gmacs(m, n, k, True, args.threads, args.repeats)
        rows.append({"m": m, "n": n, "k": k, "fp32_gmacs": fp32, "int8_gmacs": int8})
        print(
            f"M={m} N={n} K={k}: fp32 {fp32:.1f}, int8 {int8:.1f} GMAC/s, int8/fp32 {int8 / fp32:.2f}"
        )
    result = {
        "int8_vs_fp32_gemm_ratio": rows[0]["int8_gmacs"] / rows[0]["fp32_gmacs"],
        "rows": rows,
        "threads": args.threads,
        "onnxruntime": ort.__version__,
        "machine": machine_line(describe_machine()),
        "date": time.strftime("%Y-%m-%d"),
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
