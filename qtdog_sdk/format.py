"""The qtdog model repository format (version 1): read, validate and write.

A model repository is a directory, identical on disk and on the Hugging Face
Hub, holding:

- ``config.json``: the :class:`ModelConfig` below, the single source of truth.
- per ensemble member, an int8 QDQ ONNX graph (``member-<i>.onnx``; may be
  omitted, ``"onnx": null``, when ``ensemble.onnx`` holds every member) and a
  safetensors file (``member-<i>.safetensors``) with the learned integer
  weights (int8) and per-output-channel scales of every quantized conv plus
  the float tensors of everything else, for the torch backend.
- optionally ``ensemble.onnx``: every member merged into one graph whose
  output ``logits`` has shape ``[batch, members, classes]`` (faster on CPU).
- ``README.md``: the model card.

Nothing in a repository is unpickled or executed. See docs/model-format.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from qtdog_sdk.errors import ModelFormatError, UnsupportedFormatVersionError

FORMAT_NAME = "qtdog-ensemble"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
ONNX_INPUT_NAME = "pixel_values"
ONNX_OUTPUT_NAME = "logits"


@dataclass
class Preprocessing:
    """How an RGB image becomes the model's input tensor (NCHW float32).

    ``resize="squash"`` resizes the whole image to exactly ``size`` (DomainBed's
    evaluation transform); ``"shorter_center_crop"`` resizes the shorter side to
    ``size`` and crops the centre. Pixels are scaled to [0, 1], then
    ``(x - mean) / std`` per channel.
    """

    size: tuple[int, int] = (224, 224)
    resize: str = "squash"
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class Quantization:
    """How the weights (and, in ONNX, activations) are quantized."""

    weight_bits: int = 7
    weight_scheme: str = "lsq-per-channel-symmetric"
    weight_storage: str = "int8"
    activations: str = "uint8-per-tensor-affine-calibrated"
    onnx_format: str = "QDQ"


@dataclass
class Member:
    """One ensemble member and the files that hold it."""

    name: str
    onnx: str | None
    weights: str
    seed: int = 0
    val_acc: float | None = None
    sha256: dict[str, str] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Contents of config.json."""

    architecture: str
    labels: list[str]
    members: list[Member]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    quantization: Quantization = field(default_factory=Quantization)
    ensemble_onnx: str | None = None
    ensemble_sha256: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["num_classes"] = self.num_classes
        return data

    def files(self) -> dict[str, str]:
        """Every payload file of the repository mapped to its expected sha256."""
        out: dict[str, str] = {}
        for member in self.members:
            out.update(member.sha256)
        if self.ensemble_onnx and self.ensemble_sha256:
            out[self.ensemble_onnx] = self.ensemble_sha256
        return out


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise ModelFormatError(f"{where}: missing field '{key}'")
    value = data[key]
    if not isinstance(value, kind):
        raise ModelFormatError(
            f"{where}: field '{key}' has the wrong type ({type(value).__name__})"
        )
    return value


def _from_known_fields(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise ModelFormatError(f"{where}: {exc}") from None


def config_from_dict(data: Any, where: str = CONFIG_NAME) -> ModelConfig:
    """Validate a parsed config.json and build a :class:`ModelConfig`.

    Raises :class:`ModelFormatError` (one line, naming the field) on anything
    malformed and :class:`UnsupportedFormatVersionError` on a version from the
    future.
    """
    if not isinstance(data, dict):
        raise ModelFormatError(f"{where}: expected a JSON object")
    if data.get("format") != FORMAT_NAME:
        raise ModelFormatError(
            f"{where}: field 'format' must be '{FORMAT_NAME}', got {data.get('format')!r}"
        )
    version = _require(data, "format_version", int, where)
    if version > FORMAT_VERSION or version < 1:
        raise UnsupportedFormatVersionError(
            f"{where}: format_version {version} is not supported by this qtdog "
            f"(supports {FORMAT_VERSION}); upgrade qtdog"
        )
    architecture = _require(data, "architecture", str, where)
    labels = _require(data, "labels", list, where)
    if not labels or not all(isinstance(x, str) and x for x in labels):
        raise ModelFormatError(f"{where}: field 'labels' must be a non-empty list of strings")
    if len(set(labels)) != len(labels):
        raise ModelFormatError(f"{where}: field 'labels' has duplicates")
    raw_members = _require(data, "members", list, where)
    if not raw_members:
        raise ModelFormatError(f"{where}: field 'members' is empty")
    members = []
    for i, raw in enumerate(raw_members):
        mwhere = f"{where}: members[{i}]"
        if not isinstance(raw, dict):
            raise ModelFormatError(f"{mwhere}: expected an object")
        for key in ("name", "weights"):
            _require(raw, key, str, mwhere)
        if raw.get("onnx") is None:
            if not data.get("ensemble_onnx"):
                raise ModelFormatError(
                    f"{mwhere}: field 'onnx' is required when there is no 'ensemble_onnx'"
                )
        else:
            _require(raw, "onnx", str, mwhere)
        sha = _require(raw, "sha256", dict, mwhere)
        for fname in (raw.get("onnx"), raw["weights"]):
            if fname is None:
                continue
            if not isinstance(sha.get(fname), str):
                raise ModelFormatError(f"{mwhere}: field 'sha256' has no hash for '{fname}'")
        members.append(_from_known_fields(Member, raw, mwhere))
    pre_raw = _require(data, "preprocessing", dict, where)
    pre = _from_known_fields(Preprocessing, pre_raw, f"{where}: preprocessing")
    size = pre.size
    if not (
        isinstance(size, (list, tuple))
        and len(size) == 2
        and all(isinstance(v, int) and v > 0 for v in size)
    ):
        raise ModelFormatError(f"{where}: field 'preprocessing.size' must be [height, width]")
    for key in ("mean", "std"):
        vals = getattr(pre, key)
        if not (
            isinstance(vals, (list, tuple))
            and len(vals) == 3
            and all(isinstance(v, (int, float)) for v in vals)
        ):
            raise ModelFormatError(f"{where}: field 'preprocessing.{key}' must be 3 numbers")
    if any(v <= 0 for v in pre.std):
        raise ModelFormatError(f"{where}: field 'preprocessing.std' must be positive")
    if pre.resize not in ("squash", "shorter_center_crop"):
        raise ModelFormatError(f"{where}: field 'preprocessing.resize' unknown: {pre.resize!r}")
    if pre.interpolation not in ("bilinear", "bicubic", "nearest", "lanczos"):
        raise ModelFormatError(
            f"{where}: field 'preprocessing.interpolation' unknown: {pre.interpolation!r}"
        )
    pre.size = (int(size[0]), int(size[1]))
    pre.mean = tuple(float(v) for v in pre.mean)  # type: ignore[assignment]
    pre.std = tuple(float(v) for v in pre.std)  # type: ignore[assignment]
    quant = _from_known_fields(
        Quantization, data.get("quantization") or {}, f"{where}: quantization"
    )
    config = ModelConfig(
        architecture=architecture,
        labels=list(labels),
        members=members,
        preprocessing=pre,
        quantization=quant,
        ensemble_onnx=data.get("ensemble_onnx"),
        ensemble_sha256=data.get("ensemble_sha256"),
        training=data.get("training") or {},
        metrics=data.get("metrics") or {},
        format_version=version,
    )
    if config.ensemble_onnx is not None and not isinstance(config.ensemble_sha256, str):
        raise ModelFormatError(f"{where}: field 'ensemble_sha256' is required with 'ensemble_onnx'")
    return config


def read_config(repo_dir: str | Path) -> ModelConfig:
    """Read and validate ``config.json`` of a local model repository."""
    path = Path(repo_dir) / CONFIG_NAME
    if not path.is_file():
        raise ModelFormatError(f"{path}: missing (not a qtdog model repository)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path}: not valid JSON ({exc})") from None
    return config_from_dict(data, where=str(path))


def verify_files(repo_dir: str | Path, config: ModelConfig, names: list[str] | None = None) -> None:
    """Check that payload files exist and match their recorded sha256."""
    repo_dir = Path(repo_dir)
    expected = config.files()
    for name in names if names is not None else list(expected):
        path = repo_dir / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ModelFormatError(f"{CONFIG_NAME}: file name {name!r} escapes the repository")
        if not path.is_file():
            raise ModelFormatError(f"{path}: missing from the model repository")
        actual = sha256_file(path)
        if actual != expected[name]:
            raise ModelFormatError(f"{path}: sha256 mismatch (file changed or corrupt)")


def write_config(repo_dir: str | Path, config: ModelConfig) -> Path:
    """Write ``config.json`` (hashes of member files are computed here)."""
    repo_dir = Path(repo_dir)
    for member in config.members:
        member.sha256 = {
            name: sha256_file(repo_dir / name) for name in (member.onnx, member.weights) if name
        }
    if config.ensemble_onnx:
        config.ensemble_sha256 = sha256_file(repo_dir / config.ensemble_onnx)
    path = repo_dir / CONFIG_NAME
    path.write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path
