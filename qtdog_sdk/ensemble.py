"""QTDoGEnsemble: load a qtdog model repository and predict.

Example::

    >>> from qtdog_sdk import QTDoGEnsemble
    >>> model = QTDoGEnsemble.from_pretrained("path/or/hub-id")      # doctest: +SKIP
    >>> model.predict("photo.jpg").label                              # doctest: +SKIP
    'dog'
    >>> [p.label for p in model.predict(["a.jpg", "b.png"])]          # doctest: +SKIP
    ['dog', 'horse']
    >>> model.predict_proba(["a.jpg"]).shape                          # doctest: +SKIP
    (1, 7)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from qtdog_sdk import hub
from qtdog_sdk.backends import (
    Backend,
    backend_files,
    check_device,
    create_backend,
    resolve_backend_name,
)
from qtdog_sdk.card import render_model_card
from qtdog_sdk.errors import ImageLoadError, ModelNotFoundError
from qtdog_sdk.format import CARD_NAME, CONFIG_NAME, ModelConfig, read_config, verify_files
from qtdog_sdk.images import ImageInput, describe_source, load_image, preprocess
from qtdog_sdk.results import Prediction, softmax

__all__ = [
    "DEFAULT_MODEL_DIR",
    "QTDoGEnsemble",
    "ResolvedModel",
    "push_repository",
    "resolve_model",
    "save_repository",
]

#: The model shipped inside the package (used when no model is named).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "default_model"


def _is_single(images: Any) -> bool:
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return True
    return isinstance(images, np.ndarray) and images.ndim in (2, 3)


def _as_iterable(images: Any) -> Iterable[Any]:
    if _is_single(images):
        return [images]
    if isinstance(images, np.ndarray):  # [N, H, W(, C)] batch of arrays
        return list(images)
    return images


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "/", "~", "\\")) or "\\" in text or text.count("/") > 1 or ":" in text
    )


@dataclass
class ResolvedModel:
    """Where a model repository was found: local folder, validated config, origin."""

    path: Path
    config: ModelConfig
    source: str
    hub_repo_id: str | None = None


def resolve_model(
    repo_id_or_path: str | Path | None = None,
    *,
    revision: str | None = None,
    backend: str = "auto",
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> ResolvedModel:
    """Find a model repository (packaged default, local directory or Hub) and
    read its config. From the Hub, only config.json, README.md and the files of
    ``backend`` are downloaded. Hashes are not checked here (see verify_files).
    """
    if repo_id_or_path is None:
        if not (DEFAULT_MODEL_DIR / CONFIG_NAME).is_file():
            raise ModelNotFoundError(
                "no default model is packaged with this qtdog install; "
                "pass a model directory or a Hub repo id (e.g. --model owner/name)"
            )
        return ResolvedModel(DEFAULT_MODEL_DIR, read_config(DEFAULT_MODEL_DIR), "default")
    text = os.fspath(repo_id_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return ResolvedModel(path, read_config(path), text)
    if path.exists():
        raise ModelNotFoundError(f"{text}: is a file; expected a model repository directory")
    if (
        isinstance(repo_id_or_path, Path)
        or _looks_like_path(text)
        or not hub.looks_like_repo_id(text)
    ):
        raise ModelNotFoundError(f"{text}: no such model directory (and not a Hub repo id)")
    kwargs: dict[str, Any] = {
        "cache_dir": cache_dir,
        "token": token,
        "local_files_only": local_files_only,
    }
    try:
        path = hub.download_snapshot(
            text, revision=revision, allow_patterns=[CONFIG_NAME, CARD_NAME], **kwargs
        )
    except ModelNotFoundError as exc:
        if "/" in text and revision is None:
            raise ModelNotFoundError(f"{exc} (and there is no local directory {text!r})") from None
        raise
    config = read_config(path)
    commit = path.name  # snapshot folders are named by commit hash
    wanted = [CONFIG_NAME, CARD_NAME, *backend_files(config, backend)]
    path = hub.download_snapshot(text, revision=commit, allow_patterns=wanted, **kwargs)
    return ResolvedModel(path, read_config(path), text, hub_repo_id=text)


def save_repository(
    src_dir: str | Path, config: ModelConfig, save_directory: str | Path, repo_id: str | None = None
) -> Path:
    """Copy a verified model repository (config.json + payload files) and write a fresh card."""
    src_dir = Path(src_dir)
    verify_files(src_dir, config)
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != src_dir.resolve():
        for name in [CONFIG_NAME, *config.files()]:
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src_dir / name, target)
    (out / CARD_NAME).write_text(render_model_card(config, repo_id=repo_id), encoding="utf-8")
    return out


def push_repository(
    src_dir: str | Path,
    config: ModelConfig,
    repo_id: str,
    *,
    private: bool = False,
    token: str | bool | None = None,
    commit_message: str = "Upload qtdog model",
) -> str:
    """Verify, stage (with a card naming ``repo_id``) and upload a model repository; returns the commit hash."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="qtdog-push-") as tmp:
        folder = save_repository(src_dir, config, Path(tmp) / "repo", repo_id=repo_id)
        info = hub.upload_folder(
            folder, repo_id, private=private, token=token, commit_message=commit_message
        )
    return str(getattr(info, "oid", "") or "")


class QTDoGEnsemble:
    """An int8 QT-DoG ensemble ready to predict.

    Build it with :meth:`from_pretrained`. The ensemble rule is
    ``softmax(mean over members of logits)``.
    """

    def __init__(
        self, repo_dir: str | Path, config: ModelConfig, backend: Backend, source: str | None = None
    ):
        self.repo_dir = Path(repo_dir)
        self._config = config
        self.backend = backend
        #: what the model was loaded from (directory, Hub id or "default")
        self.source = source or str(repo_dir)
        #: Hub coordinates when loaded from the Hub (repo id, revision)
        self.hub_repo_id: str | None = None
        self.hub_revision: str | None = None
        self._hub_kwargs: dict[str, Any] = {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        repo_id_or_path: str | Path | None = None,
        revision: str | None = None,
        device: str = "auto",
        backend: str = "auto",
        cache_dir: str | Path | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
    ) -> QTDoGEnsemble:
        """Load a model from a local directory, the Hub, or the packaged default.

        Args:
            repo_id_or_path: a local model repository directory, a Hub repo id
                (``"owner/name"``), or None for the model shipped with qtdog.
            revision: Hub branch, tag or commit (Hub only).
            device: ``"auto"`` (CUDA if the backend can use it), ``"cpu"`` or ``"cuda"``.
            backend: ``"auto"`` (= ``"onnx"``), ``"onnx"`` or ``"torch"``.
            cache_dir, token, local_files_only: passed to huggingface_hub.

        The config is validated and the sha256 of every file the backend reads
        is checked before anything is loaded.

        Raises:
            ModelNotFoundError, ModelFormatError, UnsupportedFormatVersionError,
            BackendUnavailableError -- all with one-line messages.

        Example::

            >>> QTDoGEnsemble.from_pretrained("runs/pacs/model", backend="onnx")   # doctest: +SKIP
        """
        backend_name = resolve_backend_name(backend)
        check_device(device)
        resolved = resolve_model(
            repo_id_or_path,
            revision=revision,
            backend=backend_name,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
        )
        path, config = resolved.path, resolved.config
        verify_files(path, config, backend_files(config, backend_name))
        model = cls(
            path, config, create_backend(path, config, backend_name, device), source=resolved.source
        )
        if resolved.hub_repo_id is not None:
            model.hub_repo_id = resolved.hub_repo_id
            model.hub_revision = path.name
            model._hub_kwargs = {
                "cache_dir": cache_dir,
                "token": token,
                "local_files_only": local_files_only,
            }
        return model

    # --------------------------------------------------------------- properties
    @property
    def config(self) -> ModelConfig:
        """The validated contents of config.json."""
        return self._config

    @property
    def labels(self) -> list[str]:
        """Class names, in logit order."""
        return list(self._config.labels)

    @property
    def num_members(self) -> int:
        return len(self._config.members)

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of the payload files present locally (ONNX, safetensors)."""
        total = 0
        for name in self._config.files():
            path = self.repo_dir / name
            if path.is_file():
                total += path.stat().st_size
        return total

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def __repr__(self) -> str:
        return (
            f"QTDoGEnsemble(source={self.source!r}, architecture={self._config.architecture!r}, "
            f"members={self.num_members}, classes={len(self.labels)}, backend={self.backend_name!r}, "
            f"device={self.device!r})"
        )

    # --------------------------------------------------------------- inference
    def _load_batch(
        self, chunk: list[Any]
    ) -> tuple[list[tuple[int, str, Image.Image]], list[Prediction | None]]:
        loaded: list[tuple[int, str, Image.Image]] = []
        slots: list[Prediction | None] = [None] * len(chunk)
        for i, src in enumerate(chunk):
            name = describe_source(src)
            try:
                loaded.append((i, name, load_image(src)))
            except ImageLoadError as exc:
                slots[i] = Prediction.failed(name, str(exc))
        return loaded, slots

    def member_logits(
        self, images: ImageInput | Iterable[ImageInput], batch_size: int = 32
    ) -> np.ndarray:
        """Per-member logits ``float32 [N, M, C]``; raises ImageLoadError on a bad input."""
        outs = []
        for chunk in _batched(_as_iterable(images), max(1, int(batch_size))):
            imgs = [load_image(src) for src in chunk]
            outs.append(self.backend.run(preprocess(imgs, self._config.preprocessing)))
        if not outs:
            return np.zeros((0, self.num_members, len(self.labels)), dtype=np.float32)
        return np.concatenate(outs)

    def iter_predict(
        self, images: ImageInput | Iterable[ImageInput], batch_size: int = 32, top_k: int = 5
    ) -> Iterator[Prediction]:
        """Stream predictions in input order, loading images one batch at a time.

        An input that cannot be loaded yields a :class:`Prediction` whose
        ``error`` says why; the rest of its batch is still predicted.

        Example::

            >>> for p in model.iter_predict(Path("photos").glob("*.jpg")):   # doctest: +SKIP
            ...     print(p.path, p.label, p.score)
        """
        labels = self.labels
        for chunk in _batched(_as_iterable(images), max(1, int(batch_size))):
            loaded, slots = self._load_batch(chunk)
            if loaded:
                batch = preprocess([img for _, _, img in loaded], self._config.preprocessing)
                logits = self.backend.run(batch)
                for (i, name, _), row in zip(loaded, logits, strict=True):
                    slots[i] = Prediction.from_logits(name, row, labels, top_k)
            yield from (p for p in slots if p is not None)

    def predict(
        self, images: ImageInput | Iterable[ImageInput], batch_size: int = 32, top_k: int = 5
    ) -> Prediction | list[Prediction]:
        """Predict one image (returns a :class:`Prediction`) or many (returns a list).

        A single input is a path, a PIL image or a 2-D/3-D array (one image,
        HxW or HxWxC); a list, any iterable or a 4-D array is many. For a
        single input a load failure raises :class:`ImageLoadError`; for many,
        failed inputs come back as predictions with ``error`` set.

        Example::

            >>> p = model.predict("dog.jpg", top_k=3)          # doctest: +SKIP
            >>> p.label, p.score, p.agreement                   # doctest: +SKIP
            ('dog', 0.93, 1.0)
        """
        if _is_single(images):
            name = describe_source(images)
            batch = preprocess([load_image(images)], self._config.preprocessing)
            return Prediction.from_logits(name, self.backend.run(batch)[0], self.labels, top_k)
        return list(self.iter_predict(images, batch_size=batch_size, top_k=top_k))

    def predict_proba(
        self, images: ImageInput | Iterable[ImageInput], batch_size: int = 32
    ) -> np.ndarray:
        """Class probabilities ``[N, C]`` = softmax of the mean member logits.

        Raises :class:`ImageLoadError` if an input cannot be loaded.
        """
        logits = self.member_logits(images, batch_size=batch_size)
        return softmax(logits.mean(axis=1), axis=-1).astype(np.float32)

    # ------------------------------------------------------------ save / push
    def _ensure_all_files(self) -> None:
        """Hub snapshots hold only the files the backend needed: fetch the rest."""
        missing = [n for n in self._config.files() if not (self.repo_dir / n).is_file()]
        if missing and self.hub_repo_id is not None:
            self.repo_dir = hub.download_snapshot(
                self.hub_repo_id,
                revision=self.hub_revision,
                allow_patterns=[CONFIG_NAME, CARD_NAME, *self._config.files()],
                **self._hub_kwargs,
            )

    def save_pretrained(self, save_directory: str | Path, repo_id: str | None = None) -> Path:
        """Write a complete model repository: config.json, every payload file
        (verified against its sha256) and a freshly rendered README.md card.

        Example::

            >>> model.save_pretrained("exported/pacs-sketch")     # doctest: +SKIP
        """
        self._ensure_all_files()
        return save_repository(self.repo_dir, self._config, save_directory, repo_id=repo_id)

    def push_to_hub(
        self,
        repo_id: str,
        private: bool = False,
        token: str | bool | None = None,
        commit_message: str = "Upload qtdog model",
    ) -> str:
        """Upload this model to the Hub (create_repo + upload_folder); returns the commit hash.

        Example::

            >>> model.push_to_hub("me/qtdog-pacs-sketch", private=True)   # doctest: +SKIP
        """
        self._ensure_all_files()
        return push_repository(
            self.repo_dir,
            self._config,
            repo_id,
            private=private,
            token=token,
            commit_message=commit_message,
        )
