"""A local stand-in for the GitHub REST API, served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class FakeGitHub:
    """Serves ``/orgs/<org>/members`` from ``members`` in pages of ``page_size``.

    ``replies`` queues canned replies (status, headers, body) served before the normal
    ones, e.g. a rate-limit answer. ``requests`` records (path, Authorization header).
    """

    members: dict[str, list[dict]] = field(default_factory=dict)
    page_size: int = 2
    replies: list[tuple[int, dict[str, str], dict]] = field(default_factory=list)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    base_url: str = ""
    #: Seconds to stall each of the next requests (one entry per request).
    delays: list[float] = field(default_factory=list)

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        self.requests.append((handler.path, handler.headers.get("Authorization")))
        if self.delays:
            time.sleep(self.delays.pop(0))
        if self.replies:
            status, headers, body = self.replies.pop(0)
            return self._send(handler, status, headers, body)
        parts = urlsplit(handler.path)
        segments = parts.path.strip("/").split("/")
        if len(segments) != 3 or segments[0] != "orgs" or segments[2] != "members":
            return self._send(handler, 404, {}, {"message": "Not Found"})
        org = segments[1]
        if org not in self.members:
            return self._send(handler, 404, {}, {"message": "Not Found"})
        page = int(parse_qs(parts.query).get("page", ["1"])[0])
        everyone = self.members[org]
        chunk = everyone[(page - 1) * self.page_size : page * self.page_size]
        headers = {}
        if page * self.page_size < len(everyone):
            next_url = f"{self.base_url}/orgs/{org}/members?per_page=100&page={page + 1}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        return self._send(handler, 200, headers, chunk)

    @staticmethod
    def _send(handler, status: int, headers: dict[str, str], body) -> None:
        payload = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)


def member(user_id: int, login: str) -> dict:
    return {
        "id": user_id,
        "login": login,
        "type": "User",
        "site_admin": False,
        "avatar_url": f"https://avatars.example/{user_id}",
        "html_url": f"https://github.example/{login}",
    }


@contextmanager
def serve(fake: FakeGitHub) -> Iterator[FakeGitHub]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake.handle(self)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
