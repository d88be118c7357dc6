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
    ones, e.g. a rate-limit answer; a body may be a function of the request's
    Authorization header (a server that echoes it back), and a ``str`` body is sent as
    plain text. ``requests`` records (path, Authorization header); ``connections`` counts
    the TCP connections accepted, whether or not a request followed.
    """

    members: dict[str, list[dict]] = field(default_factory=dict)
    page_size: int = 2
    replies: list[tuple[int, dict[str, str], object]] = field(default_factory=list)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    base_url: str = ""
    connections: int = 0
    #: Seconds to stall each of the next requests (one entry per request).
    delays: list[float] = field(default_factory=list)

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``, as listed in INTEGRATION_ALLOWED_HOSTS to allow this server."""
        return urlsplit(self.base_url).netloc

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        authorization = handler.headers.get("Authorization")
        self.requests.append((handler.path, authorization))
        if self.delays:
            time.sleep(self.delays.pop(0))
        if self.replies:
            status, headers, body = self.replies.pop(0)
            if callable(body):
                body = body(authorization)
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
        text = isinstance(body, str)
        payload = body.encode() if text else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "text/plain" if text else "application/json")
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
def serve(fake: FakeGitHub, address: str = "127.0.0.1", port: int = 0) -> Iterator[FakeGitHub]:
    """Serve ``fake`` on ``address`` (any 127.x.y.z) and ``port`` (0: a free one)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake.handle(self)

        def log_message(self, *args) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def process_request(self, request, client_address) -> None:
            fake.connections += 1
            super().process_request(request, client_address)

    server = Server((address, port), Handler)
    fake.base_url = f"http://{address}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def allow(fake: FakeGitHub, settings, monkeypatch=None) -> None:
    """Let integrations reach ``fake``: list its host:port in INTEGRATION_ALLOWED_HOSTS.

    ``settings`` is pytest-django's fixture (this process: in-process workers, the live
    server); with ``monkeypatch``, the environment variable is set too, for worker
    subprocesses.
    """
    settings.INTEGRATION_ALLOWED_HOSTS = [*settings.INTEGRATION_ALLOWED_HOSTS, fake.host]
    if monkeypatch is not None:
        monkeypatch.setenv(
            "INTEGRATION_ALLOWED_HOSTS", ",".join(settings.INTEGRATION_ALLOWED_HOSTS)
        )
