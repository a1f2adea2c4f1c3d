"""bench/speed.py's model cache is keyed by the code that builds it: a change there rebuilds the
cached graphs instead of timing ones an older qtdog converted."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import load_bench_module

import qtdog_train.convert

speed = load_bench_module("speed.py")


def test_the_digest_follows_file_contents_and_names(tmp_path: Path):
    code = tmp_path / "convert"
    shutil.copytree(Path(qtdog_train.convert.__file__).parent, code)
    before = speed.code_digest([code])
    assert speed.code_digest([code]) == before  # stable
    (code / "member.py").write_text((code / "member.py").read_text() + "\n# changed\n")
    edited = speed.code_digest([code])
    assert edited != before
    (code / "member.py").rename(code / "renamed.py")
    assert speed.code_digest([code]) != edited
    (code / "notes.txt").write_text("not code")
    assert speed.code_digest([code]) == speed.code_digest([code])


def test_the_digest_follows_the_extra_text():
    code = Path(qtdog_train.convert.__file__).parent
    assert speed.code_digest([code], "torch==2.14.1") != speed.code_digest([code], "torch==2.15.0")


def test_the_cache_folder_names_backbone_size_and_a_digest_of_the_real_code():
    folder = speed.model_folder("tf_efficientnet_lite0", 112)
    assert folder.parent == speed.CACHE
    backbone, size, digest = folder.name.rsplit("-", 2)
    assert (backbone, size) == ("tf_efficientnet_lite0", "112")
    assert len(digest) == 10 and int(digest, 16) >= 0
    assert speed.model_folder("tf_efficientnet_lite0", 112) == folder  # stable across calls
