"""Which machine a benchmark ran on: CPU model and cores, and the GPU when one was used.

Every table in docs/results.md names its machine; ``platform.processor()`` only says
``x86_64`` on Linux, so the CPU model is read from /proc/cpuinfo where there is one.
"""

from __future__ import annotations

import os
import platform
from typing import Any


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(cuda: bool = False) -> dict[str, Any]:
    """``cpu``, ``cores`` and, with ``cuda``, ``gpu`` (the name of CUDA device 0)."""
    info: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count()}
    if cuda:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One line for a table header: the GPU first when there is one."""
    cpu = f"{info['cpu']}, {info['cores']} cores"
    return f"{info['gpu']} ({cpu})" if "gpu" in info else cpu
