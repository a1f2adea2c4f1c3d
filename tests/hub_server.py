"""A tiny in-memory Hugging Face Hub for tests, served over real loopback HTTP.

It implements just the endpoints the real ``huggingface_hub`` client calls for
``create_repo`` (models, and Spaces: ``state.repos["spaces/<id>"]``), ``upload_folder`` (preupload answers "regular" for every
file, so no LFS/Xet is involved; the commit is NDJSON with base64 content),
``repo_info``/revision info, tree listing, ``paths-info`` and ``resolve``
(HEAD/GET with ``X-Repo-Commit``, ``ETag`` = git blob sha1, ``Content-Length``).

Usage::

    with HubServer() as hub:
        os.environ["HF_ENDPOINT"] = hub.url
        ...
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

GITATTRIBUTES = b"*.onnx filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, bytes]
    parent: str | None = None


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    space_sdk: str | None = None  # set for Spaces
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        revision = unquote(revision)
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        return self.commits.get(revision)


class HubState:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lock = threading.Lock()
        self.requests: list[str] = []  # "METHOD path" log, for debugging tests
        self._counter = 0

    def new_commit(
        self, repo: Repo, message: str, files: dict[str, bytes], branch: str = "main"
    ) -> Commit:
        self._counter += 1
        parent = repo.branches.get(branch)
        oid = hashlib.sha1(
            f"{repo.repo_id}:{self._counter}:{time.time_ns()}:{message}".encode()
        ).hexdigest()
        commit = Commit(oid=oid, message=message, files=files, parent=parent)
        repo.commits[oid] = commit
        repo.branches[branch] = oid
        return commit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    # ------------------------------------------------------------ plumbing
    def log_message(self, format: str, *args: Any) -> None:  # silence stderr logging
        pass

    @property
    def state(self) -> HubState:
        return self.server.state

    @property
    def endpoint(self) -> str:
        return self.server.url

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        head: bool = False,
    ) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(
            status,
            json.dumps(payload).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )

    def _error(
        self, status: int, message: str, code: str | None = None, head: bool = False
    ) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

    def _repo(self, repo_id: str, head: bool = False) -> Repo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None:
            self._error(404, "Repository not found", "RepoNotFound", head=head)
        return repo

    def _commit(self, repo: Repo, revision: str, head: bool = False) -> Commit | None:
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound", head=head)
        return commit

    # -------------------------------------------------------------- routing
    _API = re.compile(r"^/api/(?P<kind>models|spaces)/(?P<repo>[^/]+/[^/]+|[^/]+)(?P<rest>/.*)?$")
    _RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+|[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        with self.state.lock:
            self.state.requests.append(f"{method} {self.path}")
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo()
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml()
        if (m := self._RESOLVE.match(path)) and method in ("GET", "HEAD"):
            return self._resolve(m["repo"], m["rev"], unquote(m["path"]), head=method == "HEAD")
        if m := self._API.match(path):
            rest = m["rest"] or ""
            # Spaces live beside models under a prefixed key (the Hub keeps them apart too).
            repo_id = m["repo"] if m["kind"] == "models" else f"spaces/{m['repo']}"
            if method == "GET" and rest == "":
                return self._info(repo_id, "main")
            if method == "GET" and (r := re.match(r"^/revision/(.+)$", rest)):
                return self._info(repo_id, r[1])
            if method == "GET" and (r := re.match(r"^/tree/([^/]+)(?:/(.*))?$", rest)):
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                return self._tree(repo_id, r[1], r[2] or "", recursive)
            if method == "POST" and (r := re.match(r"^/preupload/(.+)$", rest)):
                return self._preupload(repo_id)
            if method == "POST" and (r := re.match(r"^/commit/(.+)$", rest)):
                return self._commit_endpoint(repo_id, r[1])
            if method == "POST" and (r := re.match(r"^/paths-info/(.+)$", rest)):
                return self._paths_info(repo_id, r[1])
        self._error(404, f"qtdog test hub: no route for {method} {path}")

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_POST(self) -> None:
        self._route("POST")

    # ------------------------------------------------------------ endpoints
    def _create_repo(self) -> None:
        payload = json.loads(self._body() or b"{}")
        name, org = payload.get("name"), payload.get("organization")
        kind = payload.get("type") or "model"
        if kind not in ("model", "space"):
            return self._error(400, "only model repos and Spaces are supported")
        if kind == "space" and not payload.get("sdk"):
            return self._error(400, "a Space needs an sdk")
        repo_id = f"{org}/{name}" if org else name
        if kind == "space":
            repo_id = f"spaces/{repo_id}"
        with self.state.lock:
            if repo_id in self.state.repos:
                return self._json(
                    409,
                    {
                        "error": "You already created this model repo",
                        "url": f"{self.endpoint}/{repo_id}",
                    },
                )
            repo = Repo(repo_id, private=bool(payload.get("private")), space_sdk=payload.get("sdk"))
            self.state.repos[repo_id] = repo
            self.state.new_commit(repo, "initial commit", {".gitattributes": GITATTRIBUTES})
        self._json(200, {"url": f"{self.endpoint}/{repo_id}", "name": repo_id, "id": repo_id})

    def _validate_yaml(self) -> None:
        payload = json.loads(self._body() or b"{}")
        errors = validate_card_metadata(payload.get("content", ""))
        self._json(
            400 if errors else 200, {"errors": [{"message": e} for e in errors], "warnings": []}
        )

    def _info(self, repo_id: str, revision: str) -> None:
        if (repo := self._repo(repo_id)) is None or (
            commit := self._commit(repo, revision)
        ) is None:
            return
        self._json(
            200,
            {
                "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "sha": commit.oid,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "library_name": "qtdog",
                "lastModified": "2025-01-01T00:00:00.000Z",
                "createdAt": "2025-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": name} for name in sorted(commit.files)],
            },
        )

    def _entry(self, name: str, data: bytes) -> dict[str, Any]:
        return {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": name}

    def _tree(self, repo_id: str, revision: str, prefix: str, recursive: bool) -> None:
        if (repo := self._repo(repo_id)) is None or (
            commit := self._commit(repo, revision)
        ) is None:
            return
        prefix = unquote(prefix).strip("/")
        base = f"{prefix}/" if prefix else ""
        entries: list[dict[str, Any]] = []
        dirs: set[str] = set()
        for name in sorted(commit.files):
            if not name.startswith(base):
                continue
            rest = name[len(base) :]
            if "/" in rest:
                parts = rest.split("/")
                for i in range(1, len(parts) if recursive else 2):
                    dirs.add(base + "/".join(parts[:i]))
                if not recursive:
                    continue
            entries.append(self._entry(name, commit.files[name]))
        entries += [
            {"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in sorted(dirs)
        ]
        self._json(200, entries)

    def _paths_info(self, repo_id: str, revision: str) -> None:
        body = self._body()
        if (repo := self._repo(repo_id)) is None or (
            commit := self._commit(repo, revision)
        ) is None:
            return
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            paths = json.loads(body or b"{}").get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        self._json(200, [self._entry(p, commit.files[p]) for p in paths if p in commit.files])

    def _preupload(self, repo_id: str) -> None:
        payload = json.loads(self._body() or b"{}")
        if self._repo(repo_id) is None:
            return
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
            for f in payload.get("files", [])
        ]
        self._json(200, {"files": files})

    def _commit_endpoint(self, repo_id: str, revision: str) -> None:
        body = self._body()
        if (repo := self._repo(repo_id)) is None:
            return
        branch = unquote(revision)
        message, parent = "", None
        changes: dict[str, bytes | None] = {}
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                message = value.get("summary", "")
                parent = value.get("parentCommit")
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    return self._error(400, "only base64 file content is supported")
                changes[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                changes[value["path"]] = None
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                current = repo.resolve(branch)
                for name in current.files if current else {}:
                    if name.startswith(folder):
                        changes[name] = None
            else:
                return self._error(
                    400,
                    f"qtdog test hub: unsupported commit operation {key!r} (use regular uploads)",
                )
        with self.state.lock:
            head = repo.resolve(branch)
            if parent is not None and head is not None and parent != head.oid:
                return self._error(412, "parent commit is not the head of the branch")
            files = dict(head.files) if head else {}
            for name, data in changes.items():
                if data is None:
                    files.pop(name, None)
                else:
                    files[name] = data
            commit = self.state.new_commit(repo, message, files, branch=branch)
        self._json(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.endpoint}/{repo_id}/commit/{commit.oid}",
                "pullRequestUrl": None,
            },
        )

    def _resolve(self, repo_id: str, revision: str, name: str, head: bool) -> None:
        if (repo := self._repo(repo_id, head=head)) is None:
            return
        if (commit := self._commit(repo, revision, head=head)) is None:
            return
        data = commit.files.get(name)
        if data is None:
            headers = {"X-Repo-Commit": commit.oid, "X-Error-Code": "EntryNotFound"}
            self._send(
                404,
                b'{"error":"Entry not found"}',
                {"Content-Type": "application/json", **headers},
                head=head,
            )
            return
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{git_blob_sha1(data)}"',
            "Accept-Ranges": "bytes",
        }
        self._send(200, data, headers, head=head)


def validate_card_metadata(content: str) -> list[str]:
    """A few of the Hub's checks on a README's YAML front matter; returns error messages."""
    import yaml

    if not content.startswith("---\n"):
        return []  # no metadata: the Hub only warns
    try:
        front = content[4:].split("\n---\n", 1)[0]
        meta = yaml.safe_load(front)
    except yaml.YAMLError as exc:
        return [f"invalid YAML: {exc}"]
    if not isinstance(meta, dict):
        return ["metadata must be a YAML mapping"]
    errors = []
    for key in ("tags", "datasets"):
        if key in meta and not (
            isinstance(meta[key], list) and all(isinstance(x, str) for x in meta[key])
        ):
            errors.append(f"'{key}' must be a list of strings")
    for entry in meta.get("model-index", []) or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            errors.append("model-index entries need a 'name'")
            continue
        for result in entry.get("results", []):
            if not isinstance(result.get("task", {}).get("type"), str):
                errors.append("model-index result needs task.type")
            ds = result.get("dataset", {})
            if not (isinstance(ds.get("name"), str) and isinstance(ds.get("type"), str)):
                errors.append("model-index result needs dataset.name and dataset.type")
            for metric in result.get("metrics", []):
                if not isinstance(metric.get("type"), str) or not isinstance(
                    metric.get("value"), (int, float)
                ):
                    errors.append("model-index metric needs a type and a numeric value")
    return errors


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: HubState
    url: str


class HubServer:
    """Start/stop the in-memory Hub on 127.0.0.1 (random free port)."""

    def __init__(self) -> None:
        self.state = HubState()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> HubServer:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.state = self.state
        self.url = server.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="qtdog-test-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def unused_local_url() -> str:
    """An http://127.0.0.1:<port> URL where nothing listens."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
