"""ONNX export traces at a fixed batch and frees it afterwards; graphs whose trace keeps the
batch somewhere else are exported again with a symbolic batch. Either way the file runs any
batch and computes what torch computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from conftest import onnx_logits  # noqa: E402
from torch import nn  # noqa: E402

from qtdog_train.convert.onnx_export import (  # noqa: E402
    _dynamo_export,
    export_onnx,
    free_batch_dimension,
)


class _Classifier(nn.Module):
    """Conv, global pool, flatten, linear: the flatten is the one Reshape of the trace."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)))


class _GroupedReshape(_Classifier):
    """A reshape to (batch, 2, -1): its target has a -1 beside the batch, left as traced."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(x))
        return features.reshape(features.shape[0], 2, -1).mean(-1)


class _BatchIndexBias(_Classifier):
    """Adds each image's index in its batch: a fixed-batch trace keeps it as a constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        return logits + torch.arange(x.shape[0], dtype=x.dtype)[:, None]


def _batch_dims(path: Path) -> list[str]:
    graph = onnx.load(str(path)).graph
    return [v.type.tensor_type.shape.dim[0].dim_param for v in (*graph.input, *graph.output)]


@pytest.mark.parametrize("kind", [_Classifier, _GroupedReshape, _BatchIndexBias])
def test_exported_file_takes_any_batch_and_matches_torch(kind, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = kind().eval()
    path = export_onnx(net, torch.randn(2, 3, 8, 8), tmp_path / "net.onnx")
    assert all(dim for dim in _batch_dims(path))  # symbolic, not a traced number
    for batch in (1, 2, 5):
        x = torch.randn(batch, 3, 8, 8)
        with torch.no_grad():
            expected = net(x).numpy()
        np.testing.assert_allclose(onnx_logits(path, x), expected, rtol=1e-5, atol=1e-5)


def test_only_a_batch_leading_reshape_is_freed(tmp_path: Path) -> None:
    example = torch.randn(2, 3, 8, 8)
    plain, grouped = tmp_path / "plain.onnx", tmp_path / "grouped.onnx"
    _dynamo_export(_Classifier().eval(), example, plain, dynamic_batch=False)
    assert free_batch_dimension(plain, batch=2)
    assert _batch_dims(plain) == ["batch", "batch"]
    assert onnx_logits(plain, torch.randn(7, 3, 8, 8)).shape == (7, 3)

    _dynamo_export(_GroupedReshape().eval(), example, grouped, dynamic_batch=False)
    before = grouped.read_bytes()
    assert not free_batch_dimension(grouped, batch=2)
    assert grouped.read_bytes() == before  # refused: the file is left as traced
