"""Would OpenVINO close the CPU speed gap? The models of bench/speed.py under onnxruntime and
OpenVINO, side by side (a check of another runtime, not a qtdog backend).

OpenVINO is not a qtdog dependency: ``pip install openvino`` (or ``pip install --target DIR
openvino`` and ``PYTHONPATH=DIR``). Run ``python bench/speed.py`` first so the ONNX models
(fp32, int8 member, 5-member merged graphs) are cached, then:

    python bench/openvino_speed.py --size 224
    python bench/openvino_speed.py --agreement ../shared/data/PACS/sketch --every 4

OpenVINO's fp32 model runs twice: ``f32`` (fp32 arithmetic, the comparison the speed goals
make) and ``bf16`` (its default where the CPU has bfloat16 instructions: not fp32 numerics).
The 5-member graphs of bench/speed.py repeat one member, which an optimizer may deduplicate:
a ``x5`` rate above 1/5 of the member's is that, not a faster ensemble.

``--agreement DIR`` instead compares the two runtimes on the embedded default model's int8
ensemble graph over real images (``DIR/<class>/<image>``), each against the reference: the
same graph in onnxruntime with every optimization off, which executes the Q/DQ nodes as the
ONNX spec defines them. Top-1 agreement (ensemble and per member), accuracy, largest logit
difference. ``--agreement DIR --first-divergence MEMBER`` walks one member's quantized
tensors to the first where OpenVINO leaves the reference, and re-runs that layer alone:

    python bench/openvino_speed.py --agreement ../shared/data/PACS/sketch --every 16 \\
        --first-divergence 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from speed import CACHE, _build, _rate, _session

from qtdog_sdk.format import ONNX_INPUT_NAME, ONNX_OUTPUT_NAME

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "qtdog_sdk" / "assets" / "default_model"


def _openvino_request(path: Path, threads: int, precision: str, shape: list[int] | None = None):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    if shape:
        model.reshape(shape)
    compiled = core.compile_model(
        model,
        "CPU",
        {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision,
        },
    )
    return compiled.create_infer_request()


def _labelled_pixels(folder: Path, every: int):
    """(default model, pixels, labels) for every k-th labelled image of ``folder``."""
    from qtdog_sdk import QTDoGEnsemble
    from qtdog_sdk.evaluate import domain_images
    from qtdog_sdk.images import load_image, preprocess

    model = QTDoGEnsemble.from_pretrained(DEFAULT_MODEL, backend="onnx")
    items = domain_images(folder.parent, folder.name, list(model.labels))[::every]
    x = preprocess([load_image(path) for path, _ in items], model.config.preprocessing)
    return model, x, np.array([label for _, label in items])


def agreement(folder: Path, every: int, threads: int) -> dict[str, float]:
    """onnxruntime and OpenVINO on the default model's ensemble graph against the reference."""
    model, x, truth = _labelled_pixels(folder, every)
    path = DEFAULT_MODEL / model.config.ensemble_onnx
    request = _openvino_request(path, threads, "f32")
    reference = _session(path, threads, optimize=False)
    logits: dict[str, list[np.ndarray]] = {"reference": [], "onnxruntime": [], "openvino": []}
    for start in range(0, len(x), 32):
        chunk = x[start : start + 32]
        logits["reference"].append(reference.run(None, {ONNX_INPUT_NAME: chunk})[0])
        logits["onnxruntime"].append(model.backend.run(chunk))
        logits["openvino"].append(request.infer({0: chunk})[0])
    joined = {name: np.concatenate(parts) for name, parts in logits.items()}
    top = {name: value.mean(1).argmax(-1) for name, value in joined.items()}
    result: dict[str, float] = {"images": len(truth)}
    for name in joined:
        result[f"{name}_accuracy"] = float((top[name] == truth).mean())
    for name in ("onnxruntime", "openvino"):
        result[f"{name}_vs_reference_top1"] = float((top[name] == top["reference"]).mean())
        result[f"{name}_vs_reference_max_logit_difference"] = float(
            np.abs(joined[name] - joined["reference"]).max()
        )
        for member in range(joined[name].shape[1]):
            same = joined[name][:, member].argmax(-1) == joined["reference"][:, member].argmax(-1)
            result[f"{name}_vs_reference_top1_member{member}"] = float(same.mean())
    result["onnxruntime_vs_openvino_top1"] = float((top["onnxruntime"] == top["openvino"]).mean())
    return result


def _quantized_tensors(graph) -> list[str]:
    """Outputs of the activation QuantizeLinear nodes, in graph order."""
    weights = {t.name for t in graph.initializer}
    return [
        n.output[0]
        for n in graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in weights
    ]


def _segment_inputs(graph, target: str) -> list[str]:
    """The quantized tensors the layer producing ``target`` reads (through DequantizeLinear)."""
    producers = {out: node for node in graph.node for out in node.output}
    weights = {t.name for t in graph.initializer}
    found: list[str] = []
    stack, seen = [producers[target]], set()
    while stack:
        node = stack.pop()
        for name in node.input:
            source = producers.get(name)
            if name in weights or source is None or name in seen:
                continue
            seen.add(name)
            if source.op_type == "DequantizeLinear" and source.input[0] not in weights:
                found.append(source.input[0])
            else:
                stack.append(source)
    return found


def _off_by_more_than_one(reference: np.ndarray, other: np.ndarray) -> float:
    return float((np.abs(reference.astype(int) - other.astype(int)) > 1).mean())


def first_divergence(
    folder: Path, every: int, threads: int, member: int, tolerance: float
) -> dict[str, object]:
    """Walk one member's quantized tensors from the input; the first one where OpenVINO's
    uint8 values leave the reference (more than ``tolerance`` of them off by over one level)
    is re-run alone, fed the reference's own inputs: exact alone means OpenVINO's error comes
    from fusing that layer with its neighbours, not from the layer's own kernel."""
    import onnx
    import openvino as ov

    from qtdog_train.convert.onnx_export import member_prefix

    model, x, _ = _labelled_pixels(folder, every)
    whole = DEFAULT_MODEL / model.config.ensemble_onnx
    work = CACHE / "openvino-divergence"
    work.mkdir(parents=True, exist_ok=True)
    single = work / f"member{member}.onnx"
    onnx.utils.extract_model(
        str(whole), str(single), [ONNX_INPUT_NAME], [member_prefix(member) + ONNX_OUTPUT_NAME]
    )
    graph = onnx.load(str(single)).graph
    core = ov.Core()

    def run_both(path: Path, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        reference = _session(path, threads, optimize=False).run(None, feed)[0]
        optimized = _session(path, threads).run(None, feed)[0]
        compiled = core.compile_model(
            str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
        )
        return reference, optimized, compiled.create_infer_request().infer(list(feed.values()))[0]

    found: dict[str, object] = {"member": member, "images": len(x), "first_divergent": None}
    cut = work / "cut.onnx"
    for index, tensor in enumerate(_quantized_tensors(graph)):
        onnx.utils.extract_model(str(single), str(cut), [ONNX_INPUT_NAME], [tensor])
        reference, optimized, openvino = run_both(cut, {ONNX_INPUT_NAME: x})
        row = {
            "index": index,
            "tensor": tensor,
            "onnxruntime_off": _off_by_more_than_one(reference, optimized),
            "openvino_off": _off_by_more_than_one(reference, openvino),
        }
        print(json.dumps(row), flush=True)
        if row["openvino_off"] <= tolerance:
            continue
        found["first_divergent"] = row
        inputs = _segment_inputs(graph, tensor)
        if not inputs:  # the pixels' own quantization: no layer to re-run alone
            return found
        upstream = work / "upstream.onnx"
        onnx.utils.extract_model(str(single), str(upstream), [ONNX_INPUT_NAME], inputs)
        reference_inputs = _session(upstream, threads, optimize=False).run(
            None, {ONNX_INPUT_NAME: x}
        )
        alone = work / "alone.onnx"
        onnx.utils.extract_model(str(single), str(alone), inputs, [tensor])
        reference, optimized, openvino = run_both(
            alone, dict(zip(inputs, reference_inputs, strict=True))
        )
        found["layer_ops"] = [n.op_type for n in onnx.load(str(alone)).graph.node]
        found["alone_onnxruntime_off"] = _off_by_more_than_one(reference, optimized)
        found["alone_openvino_off"] = _off_by_more_than_one(reference, openvino)
        return found
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--agreement", type=Path, help="a folder of <class>/<image>")
    parser.add_argument("--every", type=int, default=1, help="with --agreement: every k-th image")
    parser.add_argument(
        "--first-divergence",
        type=int,
        metavar="MEMBER",
        help="with --agreement: find where OpenVINO leaves the reference in this member",
    )
    parser.add_argument("--tolerance", type=float, default=0.01)
    args = parser.parse_args()
    if args.agreement and args.first_divergence is not None:
        found = first_divergence(
            args.agreement, args.every, args.threads, args.first_divergence, args.tolerance
        )
        print(json.dumps(found))
        return
    if args.agreement:
        print(json.dumps(agreement(args.agreement, args.every, args.threads)))
        return
    paths = _build(args.backbone, args.size)
    x = np.random.default_rng(0).random((args.batch, 3, args.size, args.size), dtype=np.float32)
    rates: dict[str, float] = {}
    for name in ("fp32", "int8", "int8_x5", "fp32_x5"):
        path = paths[name]
        session = _session(path, args.threads)
        feed = session.get_inputs()[0].name
        rates[f"onnxruntime_{name}"] = _rate(
            lambda a, s=session, f=feed: s.run(None, {f: a}), x, args.repeats, args.seconds
        )[0]
        for precision in ("f32", "bf16") if name.startswith("fp32") else ("f32",):
            request = _openvino_request(path, args.threads, precision, list(x.shape))
            rates[f"openvino_{name}_{precision}"] = _rate(
                lambda a, r=request: r.infer({0: a}), x, args.repeats, args.seconds
            )[0]
        print({k: round(v, 1) for k, v in rates.items()}, flush=True)
    best_fp32 = max(rates["onnxruntime_fp32"], rates["openvino_fp32_f32"])
    best_eoq = max(rates["onnxruntime_int8_x5"], rates["openvino_int8_x5_f32"])
    best_member = max(rates["onnxruntime_int8"], rates["openvino_int8_f32"])
    print(
        json.dumps(
            {
                "images_per_s": {k: round(v, 1) for k, v in rates.items()},
                "eoq_int8_vs_fp32_throughput_ratio": best_eoq / best_fp32,
                "member_int8_vs_fp32_throughput_ratio": best_member / best_fp32,
                "openvino_int8_vs_onnxruntime_int8": rates["openvino_int8_f32"]
                / rates["onnxruntime_int8"],
                "eoq_int8_vs_openvino_bf16_throughput_ratio": best_eoq
                / rates["openvino_fp32_bf16"],
            }
        )
    )


if __name__ == "__main__":
    main()
