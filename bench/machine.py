"""Which machine a benchmark ran on: CPU model, cores and int8-relevant instruction sets,
and the GPU when one was used.

Every table in docs/results.md names its machine; ``platform.processor()`` only says
``x86_64`` on Linux, so the CPU is read from /proc/cpuinfo where there is one. Under a
hypervisor the model name can be as vague as "AMD EPYC" for CPUs generations apart, whose
int8 speed differs several-fold (AVX-512 VNNI multiplies int8 in one instruction, plain AVX2
needs three), so the family/model numbers and the instruction sets are recorded too.
"""

from __future__ import annotations

import os
import platform
from typing import Any

# Instruction sets that decide how fast int8 and fp32 kernels can be, in the order printed.
INT8_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def _cpuinfo_fields(text: str) -> dict[str, str]:
    """The first processor's ``key: value`` lines of /proc/cpuinfo."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_info(text: str | None = None) -> dict[str, Any]:
    """``cpu`` (model name), ``family``/``model`` numbers and ``isa`` (those of INT8_ISA present).

    ``text`` is /proc/cpuinfo's content; read from the file when not given. Off Linux only
    ``cpu`` is known.
    """
    if text is None:
        try:
            with open("/proc/cpuinfo") as handle:
                text = handle.read()
        except OSError:
            return {"cpu": platform.processor() or platform.machine()}
    fields = _cpuinfo_fields(text)
    flags = set(fields.get("flags", "").split())
    info: dict[str, Any] = {"cpu": fields.get("model name") or platform.machine()}
    if "cpu family" in fields and "model" in fields:
        info["family"], info["model"] = int(fields["cpu family"]), int(fields["model"])
    info["isa"] = [name for name in INT8_ISA if name in flags]
    return info


def describe_machine(cuda: bool = False) -> dict[str, Any]:
    """``cpu_info()`` plus ``cores`` and, with ``cuda``, ``gpu`` (the name of CUDA device 0)."""
    info: dict[str, Any] = cpu_info() | {"cores": os.cpu_count()}
    if cuda:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One line for a table header: the GPU first when there is one.

    e.g. ``AMD EPYC (family 23 model 49; avx2), 2 cores``.
    """
    details = []
    if "family" in info:
        details.append(f"family {info['family']} model {info['model']}")
    if "isa" in info:
        details.append(" ".join(info["isa"]) or "no AVX2")
    cpu = info["cpu"] + (f" ({'; '.join(details)})" if details else "")
    cpu = f"{cpu}, {info['cores']} cores"
    return f"{info['gpu']} ({cpu})" if "gpu" in info else cpu
