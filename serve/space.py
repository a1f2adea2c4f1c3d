"""``qtdog space``: write the demo as a self-contained Hugging Face Space folder.

A Gradio Space installs ``requirements.txt`` and the Gradio of ``sdk_version``
(README.md's front matter), then runs ``python app.py`` from its root with
GRADIO_SERVER_NAME=0.0.0.0. qtdog is not on PyPI, so the Space cannot install
it: the folder carries a copy of the ``qtdog_sdk`` and ``qtdog_serve`` source
(``python app.py`` puts the Space's root first on sys.path, so that copy is what
runs), and requirements.txt lists only their third-party dependencies as qtdog's
own metadata (pyproject.toml) declares them, without the torch backend's.

    build = build_space("my-space", model="runs/pacs/model")  # model copied to my-space/model
    push_space(build.folder, "me/qtdog-demo")
"""

from __future__ import annotations

import importlib
import importlib.metadata
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from qtdog_sdk import hub
from qtdog_sdk.errors import ModelNotFoundError, QTDoGError
from qtdog_serve.examples import find_examples_dir
from qtdog_serve.space_files import app_source, gitattributes, readme_text

__all__ = [
    "MODEL_FOLDER",
    "SpaceBuild",
    "build_space",
    "check_space_id",
    "gradio_version",
    "push_space",
    "space_requirements",
]

#: Where a local model (``--model DIR``) is copied inside the Space.
MODEL_FOLDER = "model"
#: The packages copied into the Space (source only).
VENDORED = ("qtdog_sdk", "qtdog_serve")
#: Core dependencies of qtdog that the Space leaves out, and why.
NOT_NEEDED = {"safetensors": "read only by the torch backend (safetensors.torch)"}
#: Everything ``build_space`` writes at the Space's root (and ``--force`` replaces).
WRITTEN_FILES = ("app.py", "README.md", "requirements.txt", ".gitattributes")
WRITTEN_FOLDERS = ("examples", MODEL_FOLDER, *VENDORED)
_SOURCE_ONLY = shutil.ignore_patterns("__pycache__", "*.py[co]", ".*")


@dataclass(frozen=True)
class SpaceBuild:
    """What :func:`build_space` wrote."""

    folder: Path
    model: str | None  # what app.py loads: MODEL_FOLDER, a Hub repo id, or None (embedded)
    requirements: list[str]
    sdk_version: str


def _canonical(name: str) -> str:
    from packaging.utils import canonicalize_name  # packaging comes with huggingface_hub

    return str(canonicalize_name(name))


def gradio_version() -> str:
    """The installed Gradio's version: the Space's ``sdk_version``."""
    try:
        return importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError:
        raise QTDoGError(
            "gradio is not installed: README.md's sdk_version is the installed gradio's "
            "version; pip install 'qtdog[demo]'"
        ) from None


def space_requirements(gradio: str | None = None) -> list[str]:
    """requirements.txt lines: qtdog's core dependencies and its ``demo`` extra, as declared.

    Specifiers come from qtdog's installed metadata (pyproject.toml); the
    dependencies in :data:`NOT_NEEDED` are left out and gradio is pinned to
    ``gradio`` (default: the installed version), the Space's ``sdk_version``.
    """
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    try:
        declared = importlib.metadata.requires("qtdog") or []
    except importlib.metadata.PackageNotFoundError:
        raise QTDoGError(
            "qtdog's package metadata not found: install qtdog (pip install -e .) to build a Space"
        ) from None
    gradio = gradio or gradio_version()
    lines = []
    for text in declared:
        req = Requirement(text)
        name = _canonical(req.name)
        if req.marker is not None and "extra" in str(req.marker):
            if not req.marker.evaluate({"extra": "demo"}):
                continue  # another extra's (torch, train, dev...)
            req.marker = None
        if name in NOT_NEEDED or name == "qtdog":
            continue
        if name == "gradio":
            if gradio not in req.specifier:
                raise QTDoGError(
                    f"gradio {gradio} is installed, but qtdog's demo extra needs gradio{req.specifier}"
                )
            req.specifier = SpecifierSet(f"=={gradio}")
        lines.append(str(req))
    if not any(_canonical(Requirement(line).name) == "gradio" for line in lines):
        raise QTDoGError("qtdog's metadata declares no 'demo' extra with gradio: reinstall qtdog")
    return lines


def _package_dir(name: str) -> Path:
    """The source folder of an imported package, named as it is imported (serve/ is qtdog_serve)."""
    module = importlib.import_module(name)
    return Path(module.__file__ or "").resolve().parent


def _check_target(folder: Path, force: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise QTDoGError(f"{folder}: is a file; expected a folder for the Space")
    for name in (*WRITTEN_FILES, *WRITTEN_FOLDERS):
        path = folder / name
        if not (path.exists() or path.is_symlink()):
            continue
        if not force:
            raise QTDoGError(
                f"{path}: already exists (pass --force to replace what qtdog space writes)"
            )
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _model_source(model: str | None) -> tuple[Path | None, str | None]:
    """(local repository to copy or None, what app.py loads); checked before anything is written.

    A local repository is verified here (config.json and every file's sha256).
    A Hub id is only checked for form: the Space downloads it when it starts.
    """
    if model is None:
        return None, None
    path = Path(model).expanduser()
    if path.is_dir():
        from qtdog_sdk.format import read_config, verify_files

        verify_files(path, read_config(path))
        return path, MODEL_FOLDER
    if path.exists():
        raise ModelNotFoundError(f"{model}: is a file; expected a model repository directory")
    if not hub.looks_like_repo_id(model) or model.startswith((".", "~")):
        raise ModelNotFoundError(f"{model}: no such model directory (and not a Hub repo id)")
    return None, model


def build_space(
    folder: str | Path,
    model: str | None = None,
    *,
    examples_dir: str | Path | None = None,
    force: bool = False,
) -> SpaceBuild:
    """Write a Space for the demo of ``model`` into ``folder``; see the module docstring.

    ``model``: a local model repository (copied into ``folder/model``), a Hub
    repo id (the Space downloads it when it starts), or None (the model
    embedded in qtdog_sdk). ``examples_dir`` defaults to the demo's (./examples
    or the checkout's). Without ``force``, refuses to overwrite any of the
    paths it writes; other files in ``folder`` (``.git``) are kept.
    """
    folder = Path(folder)
    examples = find_examples_dir(examples_dir)
    if examples is None:
        raise QTDoGError("no examples folder found (./examples): pass --examples DIR")
    sdk_version = gradio_version()
    requirements = space_requirements(sdk_version)
    local_model, loads = _model_source(model)
    packages = [_package_dir(name) for name in VENDORED]
    for source in (*packages, examples, local_model):
        if source is not None and folder.resolve().is_relative_to(source.resolve()):
            raise QTDoGError(f"{folder}: inside {source}, which is copied into the Space")
    _check_target(folder, force)
    folder.mkdir(parents=True, exist_ok=True)
    if local_model is not None:
        from qtdog_sdk.ensemble import save_repository
        from qtdog_sdk.format import read_config

        # Copies config.json and the files it lists (nothing else), with a fresh model card.
        save_repository(local_model, read_config(local_model), folder / MODEL_FOLDER)
    for name, source in zip(VENDORED, packages, strict=True):
        shutil.copytree(source, folder / name, ignore=_SOURCE_ONLY)
    shutil.copytree(examples, folder / "examples", ignore=_SOURCE_ONLY)
    build = SpaceBuild(folder, loads, requirements, sdk_version)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    (folder / "app.py").write_text(app_source(loads), encoding="utf-8")
    (folder / "README.md").write_text(
        readme_text(
            loads,
            from_hub=loads is not None and local_model is None,
            sdk_version=sdk_version,
            python_version=python,
        ),
        encoding="utf-8",
    )
    (folder / "requirements.txt").write_text(
        "# What the copies of qtdog_sdk and qtdog_serve in this Space import (onnx backend,\n"
        "# no torch), with the versions qtdog declares; gradio is README.md's sdk_version.\n"
        + "".join(f"{line}\n" for line in requirements),
        encoding="utf-8",
    )
    (folder / ".gitattributes").write_text(gitattributes(), encoding="utf-8")
    return build


def check_space_id(repo_id: str) -> None:
    """Raise unless ``repo_id`` has the form of a Space id, OWNER/NAME."""
    if "/" not in repo_id or not hub.looks_like_repo_id(repo_id):
        raise QTDoGError(f"--push {repo_id}: not a Space id (expected OWNER/NAME)")


def push_space(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    message: str = "qtdog demo",
) -> str:
    """Upload a built Space folder to the Hub Space ``repo_id`` (created if needed).

    Files that an earlier upload put under the paths qtdog writes and that the
    folder no longer has are deleted in the same commit. Returns the commit hash.
    """
    check_space_id(repo_id)
    deleted = [f"{name}/**" for name in WRITTEN_FOLDERS]
    info = hub.upload_folder(
        folder,
        repo_id,
        private=private,
        token=token,
        commit_message=message,
        space_sdk="gradio",
        delete_patterns=deleted,
    )
    return str(getattr(info, "oid", "") or "")
