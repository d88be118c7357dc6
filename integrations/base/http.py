"""HTTP clients for integration code, with the egress policy built in.

Every integration that talks HTTP gets its client here::

    from integrations.base import http

    with http.client(MyType, base_url, headers={"Authorization": f"Bearer {token}"}) as c:
        c.get("/things")

and so, with no code of its own, it cannot be pointed at a host the operator did not
allow, nor at an internal address, nor leak its credentials through a redirect (see
:func:`client`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpcore
import httpx

from integrations.base.egress import EgressPolicy, EgressRefused
from integrations.base.errors import RemoteUnavailable

#: Redirects followed in one request (same origin only, see :func:`client`).
MAX_REDIRECTS = 5


def client(
    integration_type: Any,
    base_url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> httpx.Client:
    """An ``httpx.Client`` for ``integration_type`` that only reaches allowed hosts.

    - ``base_url`` and every request URL must name one of the type's ``allowed_hosts``
      (HTTPS) or a host listed in setting ``INTEGRATION_ALLOWED_HOSTS``; otherwise
      :class:`~integrations.base.egress.EgressRefused` is raised before anything is sent
      (``base_url`` is checked here, at creation).
    - Each connection resolves the host once, refuses non-public addresses (unless the
      operator listed that host:port) and connects to exactly the checked address; TLS
      still verifies the certificate of, and sends SNI and ``Host`` for, the host name.
    - Redirects are followed only to the same scheme, host and port (credentials kept);
      a redirect anywhere else raises EgressRefused and is not followed, so headers such
      as ``Authorization`` never reach another server.
    - Environment proxies and ``.netrc`` are ignored: a proxy would connect on our behalf
      to addresses the policy never saw.
    """
    return policy_client(
        EgressPolicy.for_type(integration_type), base_url, headers=headers, timeout=timeout
    )


def policy_client(
    policy: EgressPolicy,
    base_url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> httpx.Client:
    """:func:`client` for an explicit :class:`EgressPolicy` (tests give it a stand-in DNS)."""
    policy.check_url(base_url)
    return httpx.Client(
        base_url=base_url,
        headers=dict(headers or {}),
        timeout=timeout,
        transport=EgressTransport(policy),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        trust_env=False,
        event_hooks={"response": [_same_origin_redirects_only]},
    )


class EgressTransport(httpx.HTTPTransport):
    """httpx's transport with the policy checked per request and per connection."""

    def __init__(self, policy: EgressPolicy) -> None:
        super().__init__()
        self.policy = policy
        # httpx builds its httpcore pool without a way to pass a network backend; this is
        # the same pool (same SSL context and defaults) with ours.
        self._pool = httpcore.ConnectionPool(
            ssl_context=self._pool._ssl_context,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=EgressBackend(policy),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.policy.check_url(request.url)
        try:
            return super().handle_request(request)
        except (httpx.NetworkError, httpx.TimeoutException) as exc:
            # Down, unreachable or slow: an outage to wait out, not a bug to trace.
            raise RemoteUnavailable(
                f"{request.url.host} could not be reached ({type(exc).__name__}: {exc}); "
                "the run is retried as its task's retry policy says.",
                request=request,
            ) from exc


class EgressBackend(httpcore.SyncBackend):
    """Opens TCP connections only to addresses the policy checked, in the same step."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        error: Exception | None = None
        for address in self.policy.resolve(host, port):
            try:
                return super().connect_tcp(
                    address, port, timeout, local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None  # resolve() returns at least one address
        raise error


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _same_origin_redirects_only(response: httpx.Response) -> None:
    if not response.has_redirect_location:
        return
    source = response.request.url
    try:
        target = source.join(response.headers["Location"])
    except httpx.InvalidURL:
        target = None
    if target is None or _origin(target) != _origin(source):
        shown = f"{target.scheme}://{target.netloc.decode('ascii', 'replace')}" if target else "?"
        raise EgressRefused(
            f"{source.host} answered HTTP {response.status_code} redirecting to {shown[:200]}; "
            "redirects are followed only to the same scheme, host and port, so credentials "
            "never go to another server. Point the integration's URL at the final address."
        )
