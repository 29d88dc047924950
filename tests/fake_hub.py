"""A minimal stand-in for the Hugging Face Hub on 127.0.0.1, enough for huggingface_hub's
``snapshot_download``: the model-info call (file list and commit) and ``resolve`` URLs (HEAD for
metadata, GET with Range for the bytes). Serves the files of one local folder as one repository."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0" * 39 + "1"


def serve_repo(repo: str, folder: Path, cut: str | None = None) -> tuple[ThreadingHTTPServer, list[str]]:
    """Start a server for ``repo`` (``ORG/NAME``) with ``folder``'s files; returns it (``.server_address``
    gives the port; call ``shutdown()``) and the request lines it has seen (``GET path range``).
    The first GET of the file named ``cut`` stops 1 MB short and drops the connection, as a network
    failure would."""
    files = {f.name: f.read_bytes() for f in Path(folder).iterdir() if f.is_file()}
    seen: list[str] = []
    pending_cut = {cut} if cut else set()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _file(self) -> str | None:
            m = re.fullmatch(rf"/{re.escape(repo)}/resolve/[^/]+/(.+)", self.path.split("?")[0])
            return m.group(1) if m and m.group(1) in files else None

        def _headers(self, name: str, status: int = 200, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", '"' + hashlib.sha256(files[name]).hexdigest() + '"')
            self.send_header("Content-Length", str(len(body) if status == 206 else len(files[name])))
            self.end_headers()

        def _json(self, value: object) -> None:
            body = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802
            seen.append(f"HEAD {self.path}")
            name = self._file()
            if name is None:
                self.send_error(404)
                return
            self._headers(name)

        def do_GET(self) -> None:  # noqa: N802
            seen.append(f"GET {self.path} {self.headers.get('Range', '')}".rstrip())
            if self.path.startswith(f"/api/models/{repo}/tree/"):  # the file list, one page
                tree = [
                    {"type": "file", "path": n, "size": len(files[n]), "oid": COMMIT} for n in sorted(files)
                ]
                self._json(tree)
                return
            if self.path.startswith(f"/api/models/{repo}/revision/"):
                self._json({"id": repo, "sha": COMMIT, "siblings": [{"rfilename": n} for n in sorted(files)]})
                return
            if self.path.startswith("/api/"):
                self.send_error(404)
                return
            name = self._file()
            if name is None:
                self.send_error(404)
                return
            data = files[name]
            start = 0
            m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if m:
                start = int(m.group(1))
            body = data[start:]
            self._headers(name, 206 if start else 200, body)
            if name in pending_cut:
                pending_cut.discard(name)
                self.wfile.write(body[: max(0, len(body) - 1_000_000)])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen
