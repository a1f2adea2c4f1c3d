"""bench/gpu/prepare.py: a compact dataset copy too large for one device call travels in
parts, and unpacking every part gives back the whole copy."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from conftest import load_bench_module


def _load_prepare():
    return load_bench_module("gpu/prepare.py")


def test_plan_parts_keeps_the_order_and_fills_each_call_to_its_capacity():
    prepare = _load_prepare()
    overhead = prepare.TAR_OVERHEAD_BYTES
    files = [(Path(f"f{i}.jpg"), 1000 - overhead) for i in range(10)]  # 1000 bytes packed

    parts = prepare.plan_parts(files, first=2500, later=4000, max_parts=5)

    assert [len(part) for part in parts] == [2, 4, 4]  # the first call also carries the wheels
    assert [p for part in parts for p in part] == [p for p, _ in files]
    assert prepare.plan_parts(files, first=2500, later=4000, max_parts=2) is None
    assert prepare.plan_parts(files, first=10_000, later=1, max_parts=1) == [[p for p, _ in files]]


def test_a_copy_in_parts_unpacks_to_the_whole_copy(shapes_root: Path, tmp_path: Path):
    prepare = _load_prepare()
    copy = tmp_path / "data" / "PACS-32"
    copy.mkdir(parents=True)
    counts = prepare.prepare_data(shapes_root, copy, size=32, quality=60, workers=1)
    images = sorted(copy.rglob("*.jpg"))
    assert counts["written"] == len(images) > 0
    sizes = [(p, p.stat().st_size) for p in images]
    total = sum(size for _, size in sizes)

    first, later = total // 3, total // 2
    parts = prepare.plan_parts(sizes, first, later, max_parts=10)
    assert len(parts) >= 3
    archives = prepare.pack(copy, parts)

    n = len(parts)
    assert [a.name for a in archives] == [f"PACS-32.part{k}of{n}.tar.gz" for k in range(1, n + 1)]
    assert archives[0].stat().st_size <= first
    assert all(a.stat().st_size <= later for a in archives[1:])
    unpacked = tmp_path / "device"
    for archive in archives:
        with tarfile.open(archive) as tar:
            names = tar.getnames()
            assert "PACS-32/prepare.json" in names  # any part tells the whole copy's size
            tar.extractall(unpacked, filter="data")
    got = sorted(p.relative_to(unpacked / "PACS-32") for p in unpacked.rglob("*.jpg"))
    assert got == [p.relative_to(copy) for p in images]
    for path in images:
        assert (unpacked / "PACS-32" / path.relative_to(copy)).read_bytes() == path.read_bytes()
    manifest = json.loads((unpacked / "PACS-32" / "prepare.json").read_text())
    assert manifest["images"] == len(images)

    # packing again as one archive replaces the parts
    (single,) = prepare.pack(copy)
    assert single.name == "PACS-32.tar.gz"
    assert sorted(p.name for p in copy.parent.glob("*.tar.gz")) == ["PACS-32.tar.gz"]
