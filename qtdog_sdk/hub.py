"""Hugging Face Hub access: download (with offline cache reuse) and upload.

Thin wrappers over ``huggingface_hub`` that turn its many exception types
into the SDK's one-line errors. ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` are
read from the environment at call time (huggingface_hub itself reads them
once, at import), so a process can change them before loading a model.

Example::

    >>> from qtdog_sdk.hub import download_snapshot
    >>> path = download_snapshot("someone/qtdog-pacs-sketch",
    ...                          allow_patterns=["config.json"])   # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from qtdog_sdk.errors import ModelFormatError, ModelNotFoundError, QTDoGError

__all__ = [
    "download_snapshot",
    "hub_endpoint",
    "hub_offline",
    "looks_like_repo_id",
    "upload_folder",
]

_TRUE = {"1", "true", "yes", "on"}
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


def hub_endpoint() -> str | None:
    """The Hub endpoint to use now: ``$HF_ENDPOINT`` or huggingface_hub's default."""
    value = os.environ.get("HF_ENDPOINT", "").strip()
    return value.rstrip("/") or None


def hub_offline() -> bool:
    """True when ``$HF_HUB_OFFLINE`` (read now, or at huggingface_hub's import) says so."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover
        return False


def looks_like_repo_id(text: str) -> bool:
    """``name`` or ``owner/name`` (no path separators beyond one slash, no ``..``)."""
    return bool(_REPO_ID.match(text)) and ".." not in text and not text.endswith((".", "-"))


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    for module in ("httpx2", "httpx", "requests"):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        base = getattr(mod, "HTTPError", None) or getattr(mod, "RequestException", None)
        if isinstance(base, type):
            errors.append(base)
    return tuple(errors)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return " ".join(first.split())[:200]


def _translate(exc: BaseException, repo_id: str, revision: str | None, offline: bool) -> QTDoGError:
    from huggingface_hub import errors as hf_errors

    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    if isinstance(exc, hf_errors.GatedRepoError):
        return ModelNotFoundError(
            f"{where}: gated repository on the Hub; accept its terms and pass a token"
        )
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return ModelNotFoundError(
            f"{where}: no such model repository on the Hub (or it is private: pass --token / HF_TOKEN)"
        )
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return ModelNotFoundError(f"{where}: revision {revision!r} not found in the Hub repository")
    if isinstance(exc, hf_errors.RemoteEntryNotFoundError):
        return ModelFormatError(
            f"{where}: a file listed in config.json is missing from the Hub repository"
        )
    if isinstance(exc, hf_errors.LocalEntryNotFoundError):
        if offline:
            return ModelNotFoundError(
                f"{where}: not in the local Hugging Face cache and offline mode is on (HF_HUB_OFFLINE)"
            )
        return ModelNotFoundError(
            f"{where}: cannot reach the Hub ({hub_endpoint() or 'default endpoint'}) "
            "and the model is not in the local cache"
        )
    if isinstance(exc, hf_errors.HFValidationError):
        return ModelNotFoundError(f"{repo_id!r}: not a local directory and not a valid Hub repo id")
    if isinstance(exc, hf_errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        return ModelNotFoundError(f"{where}: the Hub answered HTTP {status} ({_short(exc)})")
    return ModelNotFoundError(
        f"{where}: cannot download from the Hub ({hub_endpoint() or 'default endpoint'}): "
        f"{type(exc).__name__}: {_short(exc)}"
    )


def download_snapshot(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    allow_patterns: list[str] | None = None,
) -> Path:
    """Download (or find in the cache) a snapshot of a Hub model repository.

    Returns the local snapshot folder (its name is the commit hash). Works
    offline from the cache (``local_files_only=True`` or ``HF_HUB_OFFLINE=1``).
    Raises :class:`ModelNotFoundError` with a one-line message when neither
    the Hub nor the cache has it.
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - core dependency
        raise ModelNotFoundError(f"{repo_id}: loading from the Hub needs huggingface_hub") from None
    offline = local_files_only or hub_offline()
    try:
        folder = snapshot_download(
            repo_id,
            repo_type="model",
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=offline,
            allow_patterns=allow_patterns,
            endpoint=hub_endpoint(),
            library_name="qtdog",
        )
    except QTDoGError:
        raise
    except (ValueError, *_network_errors()) as exc:
        raise _translate(exc, repo_id, revision, offline) from None
    except Exception as exc:
        # huggingface_hub and its HTTP client raise many types; never leak a traceback
        from huggingface_hub import errors as hf_errors

        if isinstance(exc, (hf_errors.EntryNotFoundError, hf_errors.XetDownloadError)):
            raise _translate(exc, repo_id, revision, offline) from None
        raise
    return Path(folder)


def upload_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | bool | None = None,
    commit_message: str = "Upload qtdog model",
    revision: str | None = None,
    space_sdk: str | None = None,
    delete_patterns: list[str] | None = None,
) -> Any:
    """Create the repository if needed and upload a folder as one commit.

    A model repository, or with ``space_sdk`` (e.g. ``"gradio"``) a Space.
    Remote files matching ``delete_patterns`` that the folder does not have are
    deleted in the same commit. Returns huggingface_hub's ``CommitInfo``
    (``.oid`` is the new commit hash).
    """
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hf_errors

    api = HfApi(endpoint=hub_endpoint(), token=token, library_name="qtdog")
    repo_type = "space" if space_sdk else "model"
    try:
        api.create_repo(
            repo_id, repo_type=repo_type, private=private, exist_ok=True, space_sdk=space_sdk
        )
        return api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type=repo_type,
            revision=revision,
            commit_message=commit_message,
            delete_patterns=delete_patterns,
        )
    except hf_errors.HFValidationError as exc:
        raise QTDoGError(f"{repo_id!r}: not a valid Hub repo id ({_short(exc)})") from None
    except hf_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        hint = " (check your token: --token or HF_TOKEN)" if status in (401, 403) else ""
        raise QTDoGError(
            f"{repo_id}: upload failed, the Hub answered HTTP {status}{hint}: {_short(exc)}"
        ) from None
    except _network_errors() as exc:
        raise QTDoGError(
            f"{repo_id}: upload failed, cannot reach the Hub ({hub_endpoint() or 'default endpoint'}): "
            f"{type(exc).__name__}: {_short(exc)}"
        ) from None
