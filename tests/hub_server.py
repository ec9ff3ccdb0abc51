"""A local stand-in for the few Hugging Face Hub routes huggingface_hub calls to download a
snapshot and to upload a commit, so tests point ``HF_ENDPOINT`` at 127.0.0.1 and no call
leaves the machine.

Download: repo info (``/api/models/R/revision/V``), the file tree
(``/api/models/R/tree/C``), and ``/R/resolve/C/FILE`` (HEAD and GET; ``slow_bytes_per_s``
throttles GETs so a test can cancel mid-file).
Upload: ``/api/repos/create``, ``/api/models/R/preupload/V`` (``.safetensors`` as LFS, the
rest regular), card metadata validation (``/api/validate-yaml``: ``base_model`` must be
repo ids), the LFS batch API (``/R.git/info/lfs/objects/batch``, basic transfer) with
its PUT target, and ``/api/models/R/commit/V`` (ndjson). What was uploaded lands in
``repos[repo_id]`` (path → bytes) and every request in ``requests``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import yaml

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class FakeHub:
    url: str = ""
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)  # committed files
    created: dict[str, bool] = field(default_factory=dict)  # repo id → private
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 → bytes
    requests: list[tuple[str, str]] = field(default_factory=list)
    commits: list[dict[str, object]] = field(default_factory=list)
    slow_bytes_per_s: int | None = None
    # Download side: repo id → (commit, files)
    published: dict[str, tuple[str, dict[str, bytes]]] = field(default_factory=dict)

    def publish(self, repo_id: str, files: dict[str, bytes], commit: str | None = None) -> str:
        commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
        self.published[repo_id] = (commit, files)
        return commit


@contextmanager
def serve_fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        # ---- plumbing ----
        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _json(self, value: object, status: int = 200, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, item in (headers or {}).items():
                self.send_header(key, item)
            self.end_headers()
            self.wfile.write(data)

        def _not_found(self) -> None:
            self._json({"error": "not found"}, 404, {"X-Error-Code": "RepoNotFound"})

        # ---- routes ----
        def do_HEAD(self) -> None:
            self._file(head=True)

        def do_GET(self) -> None:
            path = urlparse(self.path).path
            hub.requests.append(("GET", path))
            if path.startswith("/api/models/") and "/revision/" in path:
                repo_id = path[len("/api/models/"):].split("/revision/")[0]
                if repo_id not in hub.published:
                    return self._not_found()
                commit, files = hub.published[repo_id]
                return self._json({"id": repo_id, "sha": commit, "siblings": [{"rfilename": n} for n in files]})
            if path.startswith("/api/models/") and "/tree/" in path:
                repo_id = path[len("/api/models/"):].split("/tree/")[0]
                if repo_id not in hub.published:
                    return self._not_found()
                _, files = hub.published[repo_id]
                return self._json([
                    {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for name, data in files.items()
                ])
            return self._file(head=False)

        def _file(self, head: bool) -> None:
            path = urlparse(self.path).path
            if head:
                hub.requests.append(("HEAD", path))
            if "/resolve/" not in path:
                return self._not_found()
            repo_id, rest = path.lstrip("/").split("/resolve/", 1)
            _, name = rest.split("/", 1)
            if repo_id not in hub.published or name not in hub.published[repo_id][1]:
                return self._not_found()
            commit, files = hub.published[repo_id]
            data = files[name]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
            self.end_headers()
            if head:
                return
            step = 4096
            for start in range(0, len(data), step):
                try:
                    self.wfile.write(data[start:start + step])
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client stopped reading (a cancelled download)
                if hub.slow_bytes_per_s:
                    time.sleep(step / hub.slow_bytes_per_s)

        def do_POST(self) -> None:
            path = urlparse(self.path).path
            body = self._body()
            hub.requests.append(("POST", path))
            if path == "/api/repos/create":
                payload = json.loads(body)
                repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
                hub.created[repo_id] = payload.get("visibility") == "private" or bool(payload.get("private"))
                hub.repos.setdefault(repo_id, {})
                return self._json({"url": f"{hub.url}/{repo_id}", "name": repo_id})
            if path == "/api/validate-yaml":
                # The Hub checks a card's metadata; base_model must be repo ids, as here.
                content = json.loads(body)["content"]
                front = yaml.safe_load(content.split("---")[1]) if content.startswith("---") else {}
                bases = (front or {}).get("base_model") or []
                bad = [b for b in ([bases] if isinstance(bases, str) else bases) if not _REPO_ID.match(str(b))]
                if bad:
                    return self._json({"errors": [{"message": f"base_model: not a repo id: {bad}"}]}, 400)
                return self._json({"errors": [], "warnings": []})
            if "/preupload/" in path:
                payload = json.loads(body)
                return self._json({"files": [
                    {"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(".safetensors") else "regular",
                     "shouldIgnore": False, "oid": None}
                    for f in payload["files"]
                ]})
            if path.endswith(".git/info/lfs/objects/batch"):
                payload = json.loads(body)
                objects = [
                    {"oid": o["oid"], "size": o["size"],
                     "actions": {"upload": {"href": f"{hub.url}/lfs-upload/{o['oid']}"}}}
                    for o in payload["objects"]
                ]
                return self._json({"transfer": "basic", "objects": objects})
            if "/commit/" in path:
                repo_id = path[len("/api/models/"):].split("/commit/")[0]
                files: dict[str, bytes] = {}
                header: dict[str, object] = {}
                for line in body.splitlines():
                    item = json.loads(line)
                    value = item["value"]
                    if item["key"] == "header":
                        header = value
                    elif item["key"] == "file":
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif item["key"] == "lfsFile":
                        files[value["path"]] = hub.lfs_objects[value["oid"]]
                hub.repos.setdefault(repo_id, {}).update(files)
                hub.commits.append({"repo": repo_id, "header": header, "files": sorted(files)})
                oid = hashlib.sha1(body).hexdigest()
                return self._json({"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}", "commitOid": oid})
            return self._not_found()

        def do_PUT(self) -> None:
            path = urlparse(self.path).path
            hub.requests.append(("PUT", path))
            if not path.startswith("/lfs-upload/"):
                return self._not_found()
            data = self._read_put_body()
            oid = path.rsplit("/", 1)[1]
            if hashlib.sha256(data).hexdigest() != oid:
                return self._json({"error": "sha256 mismatch"}, 400)
            hub.lfs_objects[oid] = data
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _read_put_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self._body()

    return Handler
