"""bench/machine.py tells CPUs apart that share a vague model name but not their int8 speed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import load_bench_module

machine = load_bench_module("machine.py")


def _cpuinfo(family: int, model: int, flags: str) -> str:
    """Two processors as /proc/cpuinfo lists them under KVM (the second must not be read)."""
    block = (
        "processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t: {family}\n"
        "model\t\t: {model}\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n"
    )
    return "\n".join(
        block.format(n=n, family=family, model=model, flags=flags + (" amx_int8" if n else ""))
        for n in (0, 1)
    )


def test_two_epycs_with_one_name_are_told_apart_by_family_and_isa():
    zen2 = machine.cpu_info(_cpuinfo(23, 49, "fpu sse avx fma avx2 sha_ni"))
    zen5 = machine.cpu_info(
        _cpuinfo(26, 2, "fpu avx2 avx512f avx512bw avx512_vnni avx_vnni avx512_bf16")
    )
    assert zen2 == {"cpu": "AMD EPYC", "family": 23, "model": 49, "isa": ["avx2"]}
    assert zen5["isa"] == ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16"]
    assert (
        machine.machine_line(zen2 | {"cores": 2}) == "AMD EPYC (family 23 model 49; avx2), 2 cores"
    )
    assert machine.machine_line(zen5 | {"cores": 2}).startswith(
        "AMD EPYC (family 26 model 2; avx2 avx512f avx512_vnni"
    )
    no_simd = machine.cpu_info(_cpuinfo(6, 1, "fpu sse"))
    assert machine.machine_line(no_simd | {"cores": 1}).endswith("; no AVX2), 1 cores")


def test_this_machine_is_described_from_its_own_cpuinfo():
    info = machine.describe_machine()
    assert info["cores"] == os.cpu_count()
    if not Path("/proc/cpuinfo").exists():
        pytest.skip("no /proc/cpuinfo")
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    assert info["isa"] == [name for name in machine.INT8_ISA if name in flags]
    assert machine.machine_line(info).startswith(info["cpu"])
