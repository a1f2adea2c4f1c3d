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
ensemble graph over real images (``DIR/<class>/<image>``): top-1 agreement, accuracy of
each, largest logit difference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from speed import CACHE, _rate, _session

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


def agreement(folder: Path, every: int, threads: int) -> dict[str, float]:
    """onnxruntime vs OpenVINO on the default model's ensemble graph, real images."""
    from qtdog_sdk import QTDoGEnsemble
    from qtdog_sdk.evaluate import domain_images
    from qtdog_sdk.images import load_image, preprocess

    model = QTDoGEnsemble.from_pretrained(DEFAULT_MODEL, backend="onnx")
    config = model.config
    request = _openvino_request(DEFAULT_MODEL / config.ensemble_onnx, threads, "f32")
    items = domain_images(folder.parent, folder.name, list(model.labels))[::every]
    same = right_ort = right_ov = 0
    largest = 0.0
    for start in range(0, len(items), 32):
        chunk = items[start : start + 32]
        x = preprocess([load_image(path) for path, _ in chunk], config.preprocessing)
        ort_logits = model.backend.run(x)
        ov_logits = request.infer({0: x})[0]
        ort_top, ov_top = ort_logits.mean(1).argmax(-1), ov_logits.mean(1).argmax(-1)
        truth = np.array([label for _, label in chunk])
        same += int((ort_top == ov_top).sum())
        right_ort += int((ort_top == truth).sum())
        right_ov += int((ov_top == truth).sum())
        largest = max(largest, float(np.abs(ort_logits - ov_logits).max()))
    n = len(items)
    return {
        "images": n,
        "top1_agreement": same / n,
        "onnxruntime_accuracy": right_ort / n,
        "openvino_accuracy": right_ov / n,
        "max_logit_difference": largest,
    }


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
    args = parser.parse_args()
    if args.agreement:
        print(json.dumps(agreement(args.agreement, args.every, args.threads)))
        return
    folder = CACHE / f"{args.backbone}-{args.size}"
    x = np.random.default_rng(0).random((args.batch, 3, args.size, args.size), dtype=np.float32)
    rates: dict[str, float] = {}
    for name in ("fp32", "int8", "int8_x5", "fp32_x5"):
        path = folder / f"{name}.onnx"
        if not path.is_file():
            raise SystemExit(f"{path}: missing; run bench/speed.py --sizes {args.size} first")
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
