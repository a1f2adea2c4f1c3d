"""onnxruntime backend: the int8 QDQ graphs of a model repository.

Uses ``ensemble.onnx`` (all members in one graph, output ``[N, M, C]``) when
the repository has it, otherwise one session per ``member-<i>.onnx``. This
module must never import torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from qtdog_sdk.errors import BackendUnavailableError, ModelFormatError
from qtdog_sdk.format import ONNX_INPUT_NAME, ONNX_OUTPUT_NAME, ModelConfig

__all__ = ["OnnxBackend", "physical_cores"]


def physical_cores() -> int:
    """Physical cores available to this process (SMT siblings counted once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        base = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (base / "physical_package_id").read_text().strip()
            core = (base / "core_id").read_text().strip()
        except OSError:
            return max(1, len(cpus))
        cores.add((package, core))
    return max(1, len(cores))


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
        raise BackendUnavailableError(
            f"the onnx backend needs onnxruntime ({exc}); pip install onnxruntime"
        ) from None
    return ort


class OnnxBackend:
    """Per-member logits from onnxruntime sessions."""

    name = "onnx"

    def __init__(self, repo_dir: str | Path, config: ModelConfig, device: str = "auto") -> None:
        ort = _import_ort()
        self.repo_dir = Path(repo_dir)
        self.config = config
        available = ort.get_available_providers()
        has_cuda = "CUDAExecutionProvider" in available
        if device == "cuda" and not has_cuda:
            raise BackendUnavailableError(
                "device 'cuda' requested but onnxruntime has no CUDAExecutionProvider here "
                "(install onnxruntime-gpu and a CUDA runtime, or use --device cpu)"
            )
        use_cuda = has_cuda and device in ("cuda", "auto")
        self.device = "cuda" if use_cuda else "cpu"
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if use_cuda
            else ["CPUExecutionProvider"]
        )

        files = [config.ensemble_onnx] if config.ensemble_onnx else [m.onnx for m in config.members]
        self.merged = bool(config.ensemble_onnx)
        self.sessions = []
        for fname in files:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = physical_cores()
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            if len(files) > 1:
                # several sessions on few cores: spinning threads starve each other
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            path = self.repo_dir / fname
            try:
                session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
            except Exception as exc:  # onnxruntime raises its own exception types
                msg = " ".join(str(exc).split())[:300]
                raise ModelFormatError(
                    f"{path}: onnxruntime cannot load this graph ({msg})"
                ) from None
            inputs = [i.name for i in session.get_inputs()]
            outputs = [o.name for o in session.get_outputs()]
            if ONNX_INPUT_NAME not in inputs or ONNX_OUTPUT_NAME not in outputs:
                raise ModelFormatError(
                    f"{path}: graph must have input '{ONNX_INPUT_NAME}' and output '{ONNX_OUTPUT_NAME}' "
                    f"(has inputs {inputs}, outputs {outputs})"
                )
            self.sessions.append(session)
        batch_dim = self.sessions[0].get_inputs()[0].shape[0]
        #: fixed batch size of the graph, or None when dynamic
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None

    def _run_session(self, session, batch: np.ndarray) -> np.ndarray:
        if self.fixed_batch is None or len(batch) == self.fixed_batch:
            return session.run([ONNX_OUTPUT_NAME], {ONNX_INPUT_NAME: batch})[0]
        outs = []
        step = self.fixed_batch
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            n = len(chunk)
            if n < step:  # pad the last chunk to the graph's fixed batch size
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - n, axis=0)])
            outs.append(session.run([ONNX_OUTPUT_NAME], {ONNX_INPUT_NAME: chunk})[0][:n])
        return np.concatenate(outs)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Per-member logits ``float32 [N, M, C]``."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.merged:
            logits = self._run_session(self.sessions[0], batch)
        else:
            logits = np.stack([self._run_session(s, batch) for s in self.sessions], axis=1)
        expected = (len(batch), len(self.config.members), self.config.num_classes)
        if logits.shape != expected:
            raise ModelFormatError(
                f"{self.repo_dir}: ONNX output has shape {tuple(logits.shape)}, expected {expected} "
                "(batch, members, classes)"
            )
        return logits.astype(np.float32, copy=False)
