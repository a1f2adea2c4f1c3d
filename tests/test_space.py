"""``qtdog space``: the Space folder runs as Hugging Face runs it, from its own files only.

A Space is built with the real command from the ``tiny_repo`` model, then
started the way Spaces start it (``python app.py`` in the folder, no
PYTHONPATH, GRADIO_SERVER_NAME/PORT from the environment) and asked for a
prediction over HTTP. Its requirements.txt is checked against qtdog's metadata,
the installed environment and the imports of the copied source.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hub_server import HubServer
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file

from qtdog_sdk.ensemble import push_repository
from qtdog_sdk.format import read_config

ROOT = Path(__file__).resolve().parents[1]
QTDOG = shutil.which("qtdog") or str(Path(sys.executable).with_name("qtdog"))
EXAMPLE = ROOT / "examples" / "sketch_dog.png"
TORCH_STACK = {"torch", "torchvision", "timm", "torchao", "safetensors", "qtdog"}

pytestmark = [
    # gradio's queue uses pandas options that pandas 3 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning"),
]


def qtdog(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [QTDOG, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


def space_env(**extra: str) -> dict[str, str]:
    """The environment of a Space process: nothing that points Python at this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", **extra)
    return env


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def requirement_lines(space: Path) -> list[str]:
    lines = (space / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def front_matter(space: Path) -> dict:
    text = (space / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text[4:].split("\n---\n", 1)[0])


@pytest.fixture(scope="module")
def space(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("spaces") / "local-model"
    result = qtdog("space", str(folder), "--model", str(tiny_repo))
    assert result.returncode == 0, result.stderr
    assert "wrote a Space" in result.stderr
    return folder


# ------------------------------------------------------------------ the files
def test_readme_front_matter_follows_the_spaces_convention(space: Path):
    meta = front_matter(space)
    assert meta["sdk"] == "gradio"
    assert meta["sdk_version"] == importlib.metadata.version("gradio")
    assert meta["app_file"] == "app.py" and (space / "app.py").is_file()
    assert meta["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert isinstance(meta["title"], str) and len(meta["short_description"]) <= 60
    assert "models" not in meta  # the model is inside the Space


def test_requirements_resolve_on_pypi_and_are_satisfied_here(space: Path):
    lines = requirement_lines(space)
    names = set()
    for line in lines:
        req = Requirement(line)  # raises on anything pip would not read
        assert req.url is None and req.marker is None, line  # plain PyPI names only
        installed = importlib.metadata.version(req.name)
        assert req.specifier.contains(installed, prereleases=True), (line, installed)
        names.add(canonicalize_name(req.name))
    assert not names & TORCH_STACK, names
    assert f"gradio=={front_matter(space)['sdk_version']}" in lines
    declared = {
        canonicalize_name(Requirement(r).name): Requirement(r).specifier
        for r in importlib.metadata.requires("qtdog") or []
    }
    for line in lines:  # every specifier is qtdog's own (gradio: the pinned sdk_version)
        req = Requirement(line)
        if req.name != "gradio":
            assert req.specifier == declared[canonicalize_name(req.name)], line


# Imports of the copied source that requirements.txt rightly leaves out.
NOT_RUNTIME_FILES = {"qtdog_sdk/backends/torch_backend.py"}  # the torch backend
NOT_RUNTIME_MODULES = {
    "yaml",  # qtdog_sdk.card falls back to JSON without it (and huggingface_hub brings it)
    "packaging",  # qtdog_serve.space builds Spaces; a running Space never imports it
}


def third_party_imports(space: Path) -> set[str]:
    """Top-level modules imported anywhere in the copied packages (lazy imports included)."""
    first_party = {"qtdog_sdk", "qtdog_serve"}
    found = set()
    for package in first_party:
        for path in (space / package).rglob("*.py"):
            if path.relative_to(space).as_posix() in NOT_RUNTIME_FILES:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    return found - stdlib - first_party - NOT_RUNTIME_MODULES


def test_requirements_are_exactly_what_the_copied_source_imports(space: Path):
    modules = third_party_imports(space)
    assert {"onnxruntime", "gradio", "numpy", "PIL"} <= modules
    owners = importlib.metadata.packages_distributions()
    needed = {canonicalize_name(owners[m][0]) for m in modules}
    listed = {canonicalize_name(Requirement(line).name) for line in requirement_lines(space)}
    assert listed == needed


def test_the_space_holds_source_copies_examples_and_the_model(space: Path, tiny_repo: Path):
    import qtdog_sdk
    import qtdog_serve

    for package in (qtdog_sdk, qtdog_serve):
        source = Path(package.__file__).parent
        copy = space / package.__name__
        for path in source.rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            assert (copy / path.relative_to(source)).read_bytes() == path.read_bytes(), path
    assert not list(space.rglob("__pycache__")) and not list(space.rglob("*.pyc"))
    assert (space / "qtdog_sdk/assets/default_model/config.json").is_file()
    assert (space / "qtdog_sdk/assets/default_model/ensemble.onnx").is_file()
    assert "ICCV 2017" in (space / "examples/README.md").read_text()
    assert (space / "examples" / EXAMPLE.name).read_bytes() == EXAMPLE.read_bytes()
    config = read_config(space / "model")
    assert config.to_dict() == read_config(tiny_repo).to_dict()
    for name in config.files():
        assert (space / "model" / name).read_bytes() == (tiny_repo / name).read_bytes()
    assert 'MODEL = "model"' in (space / "app.py").read_text()


def test_generated_app_is_lint_clean(space: Path):
    ruff = shutil.which("ruff") or pytest.skip("ruff not installed")
    result = subprocess.run(
        [ruff, "check", "--no-cache", "--isolated", "--select", "E,F,W,B,UP", "app.py"],
        cwd=space,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


# ----------------------------------------------------------------- running it
def test_python_app_py_serves_predictions_from_its_own_copies(space: Path, tiny_repo: Path):
    # Which qtdog_sdk would `python app.py` import? Ask a script beside it, run the same way.
    probe = space / "where_probe.py"
    probe.write_text(
        "import qtdog_sdk, qtdog_serve.app, qtdog_sdk.ensemble as e\n"
        "print(qtdog_sdk.__file__); print(qtdog_serve.app.__file__); print(e.DEFAULT_MODEL_DIR)\n"
    )
    try:
        where = subprocess.run(
            [sys.executable, probe.name],
            cwd=space,
            env=space_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        probe.unlink()
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).resolve().is_relative_to(space.resolve()), where.stdout

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=space,
        env=space_env(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:
                assert time.monotonic() < deadline, "the Space did not come up in 60 s"
                time.sleep(0.3)
        label, details, result = client.predict(handle_file(str(EXAMPLE)), api_name="/predict")
        # the copied tiny model answers (its shape classes), not qtdog's embedded PACS model
        assert label["label"] in read_config(tiny_repo).labels, label
        assert result["error"] is None and result["label"] == label["label"] in details
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ------------------------------------------------------ Hub models and --push
@pytest.fixture
def hub() -> Iterator[HubServer]:
    server = HubServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_push_a_space_for_a_hub_model_and_load_it(
    hub: HubServer, tiny_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    env = {**space_env(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf")), "HF_HUB_OFFLINE": "0"}
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    push_repository(tiny_repo, read_config(tiny_repo), "me/tiny", token="t")
    folder = tmp_path / "hub-space"
    result = qtdog(
        "space", str(folder), "-m", "me/tiny", "--push", "me/demo", "--token", "t", env=env
    )
    assert result.returncode == 0, result.stderr
    assert "pushed" in result.stderr and "me/demo" in result.stderr
    assert not (folder / "model").exists()
    assert 'MODEL = "me/tiny"' in (folder / "app.py").read_text()
    assert front_matter(folder)["models"] == ["me/tiny"]

    repo = hub.state.repos["spaces/me/demo"]
    assert repo.space_sdk == "gradio"
    files = repo.resolve("main").files
    local = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert local <= set(files)
    assert files["app.py"] == (folder / "app.py").read_bytes()

    # The Space's app, imported as Spaces do, downloads the model from the (test) Hub.
    loaded = subprocess.run(
        [sys.executable, "-c", "import app; print(app.demo.title, app.model_source())"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split()[-1] == "me/tiny"

    # Rebuilt with a local model and pushed again: model/ appears; back to the Hub id: it goes.
    again = qtdog(
        "space", str(folder), "-m", str(tiny_repo), "--force", "--push", "me/demo", env=env
    )
    assert again.returncode == 0, again.stderr
    assert "model/config.json" in repo.resolve("main").files
    back = qtdog("space", str(folder), "-m", "me/tiny", "--force", "--push", "me/demo", env=env)
    assert back.returncode == 0, back.stderr
    assert not any(name.startswith("model/") for name in repo.resolve("main").files)


# --------------------------------------------------------------------- errors
def test_errors_are_one_line_and_name_the_culprit(tiny_repo: Path, tmp_path: Path):
    def fails(*args: str) -> str:
        result = qtdog("space", *args)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
        return result.stderr

    missing = tmp_path / "no-such-model"
    assert str(missing) in fails(str(tmp_path / "a"), "--model", str(missing))
    broken = Path(shutil.copytree(tiny_repo, tmp_path / "broken"))
    onnx = next(broken.glob("*.onnx"))
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\0")
    assert onnx.name in fails(str(tmp_path / "b"), "--model", str(broken))
    assert "--push" in fails(str(tmp_path / "c"), "--push", "no-owner")
    assert not (tmp_path / "c").exists()  # nothing written before the check

    target = tmp_path / "d"
    (target / ".git").mkdir(parents=True)
    (target / "app.py").write_text("mine\n")
    assert str(target / "app.py") in fails(str(target))
    assert (target / "app.py").read_text() == "mine\n"
    forced = qtdog("space", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (target / ".git").is_dir() and "build_app" in (target / "app.py").read_text()
