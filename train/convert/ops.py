"""The aten ops the conversion passes look for, named once.

The quantizer (:mod:`pt2e`) annotates these ops and the integer pass
(:mod:`integer_exact`) rewrites them, so both must agree on what counts as a
conv, an activation or a residual add.
"""

from __future__ import annotations

from collections.abc import Set

import torch
from torch import fx

aten = torch.ops.aten

CONV = frozenset({aten.conv2d.default})
#: ReLU6 as timm exports it (hardtanh) or as a clamp.
CLAMP = frozenset({aten.hardtanh.default, aten.hardtanh_.default, aten.clamp.default})
RELU = frozenset({aten.relu.default, aten.relu_.default})
#: Every activation a quantized conv may end in.
ACTIVATION = CLAMP | RELU
ADD = frozenset({aten.add.Tensor, aten.add_.Tensor})
PAD = frozenset({aten.pad.default, aten.constant_pad_nd.default})


def sole_user(node: fx.Node, targets: Set[object]) -> fx.Node | None:
    """``node``'s only user when it is one of ``targets`` (a fusable tail), else None."""
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0].target in targets else None
