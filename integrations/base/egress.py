"""Where integrations may send HTTP requests: the egress policy.

A tenant's owner or admin edits an integration's config, URLs included (GitHub's
``base_url``), while the worker that runs it holds the tenant's token and can reach the
operator's internal network. So every request an integration makes is checked twice:

* **By name**, before anything is resolved or sent: the URL must name one of the
  integration type's own hosts (``IntegrationType.allowed_hosts``, over HTTPS), or a
  ``host``/``host:port`` the operator listed in setting ``INTEGRATION_ALLOWED_HOSTS``.
  Admin forms and ``Integration.full_clean()`` run this check (no DNS there: a form must
  not depend on, or let a tenant probe, the operator's resolver).
* **By address**, when the connection opens: the host is resolved once, every address of
  the answer must be public (not loopback, private, unique-local, link-local, cloud
  metadata, CGNAT, multicast, reserved, unspecified, nor an IPv4-mapped, 6to4, Teredo or
  NAT64 form of those), and the socket connects to exactly those validated addresses, so
  an answer that changes between check and connect (DNS rebinding) cannot move the
  connection. An entry the operator listed is trusted as it resolves (a GitHub
  Enterprise server on the private network, a local test server).

A refusal raises :class:`EgressRefused` (an ``IntegrationError``: not retried) whose
message names the setting and the exact value to add. HTTP clients that apply this policy
come from :func:`integrations.base.http.client`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from integrations.base.errors import IntegrationError

SETTING = "INTEGRATION_ALLOWED_HOSTS"
DEFAULT_PORTS = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., list[tuple[Any, ...]]]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class EgressRefused(IntegrationError):
    """An integration tried to reach a host or address the egress policy does not allow."""


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why a connection to ``ip`` is refused, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if any(ip in network for network in _NAT64):
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        for inner in embedded:
            reason = forbidden_reason(inner)
            if reason:
                return f"{reason} (embedded in {ip})"
    if ip in _METADATA:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "a carrier-grade NAT address (100.64.0.0/10)"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "a non-public address"
    return None


def parse_host_entry(entry: str, *, what: str = SETTING) -> tuple[str, int]:
    """``"host"`` (port 443), ``"host:port"`` or ``"[v6]:port"`` as (lower-case host, port)."""
    text = entry.strip()
    try:
        url = httpx.URL(f"https://{text}")
    except httpx.InvalidURL:
        url = None
    if (
        url is None
        or not text
        or not url.host
        or url.userinfo
        or url.raw_path not in (b"", b"/")
        or url.query
        or url.fragment
        or "/" in text
    ):
        raise EgressRefused(
            f"{what} entry {entry!r} is not a host name or address with an optional port, "
            "e.g. github.example.com or 10.0.0.5:8443."
        )
    return _normal_host(url), url.port or 443


def _normal_host(url: httpx.URL) -> str:
    return url.raw_host.decode("ascii").lower().rstrip(".")


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def host_entry(host: str, port: int) -> str:
    """How (host, port) is written in INTEGRATION_ALLOWED_HOSTS."""
    return _bracketed(host) if port == 443 else f"{_bracketed(host)}:{port}"


def how_to_allow(host: str, port: int) -> str:
    """The sentence that tells the operator what to add to the setting."""
    return (
        f"add '{host_entry(host, port)}' to {SETTING} (environment variable of the web and "
        "worker processes: a comma-separated list of host or host:port)."
    )


def _default_resolver(host: str, port: int) -> list[tuple[Any, ...]]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


@dataclass(frozen=True)
class EgressPolicy:
    """Which hosts the integrations of one type may reach.

    ``resolver`` (``getaddrinfo``-like) and ``classify`` (:func:`forbidden_reason`-like)
    exist so tests can stand in for DNS; production uses the defaults.
    """

    integration: str
    own_hosts: frozenset[tuple[str, int]]
    operator_hosts: frozenset[tuple[str, int]]
    resolver: Resolver = field(default=_default_resolver, compare=False)
    classify: Callable[[IPAddress], str | None] = field(default=forbidden_reason, compare=False)

    @classmethod
    def for_type(cls, integration_type: Any, **options: Any) -> EgressPolicy:
        """The policy of an ``IntegrationType``, with the operator's setting as it is now."""
        from django.conf import settings

        name = getattr(integration_type, "name", str(integration_type))
        own = getattr(integration_type, "allowed_hosts", ())
        listed = getattr(settings, SETTING, None) or []
        if isinstance(listed, str):
            listed = [part for part in listed.split(",") if part.strip()]
        return cls(
            integration=name,
            own_hosts=frozenset(
                parse_host_entry(h, what=f"{name} allowed_hosts") for h in _entries(own)
            ),
            operator_hosts=frozenset(parse_host_entry(h) for h in _entries(listed)),
            **options,
        )

    def check_url(self, url: str | httpx.URL) -> tuple[str, str, int]:
        """(scheme, host, port) of ``url`` if the policy lets integrations reach it.

        Name-level only (no DNS); raises EgressRefused saying what to change otherwise.
        """
        try:
            parsed = url if isinstance(url, httpx.URL) else httpx.URL(str(url))
        except httpx.InvalidURL as exc:
            raise EgressRefused(f"{str(url)[:200]!r} is not a valid URL ({exc}).") from None
        scheme = parsed.scheme
        if scheme not in DEFAULT_PORTS or not parsed.host:
            raise EgressRefused(
                f"{self.integration} integrations only reach http(s) URLs with a host, "
                f"e.g. https://{self._example()}; got {str(url)[:200]!r}."
            )
        host = _normal_host(parsed)
        port = parsed.port or DEFAULT_PORTS[scheme]
        allowed = (host, port) in self.operator_hosts or (
            (host, port) in self.own_hosts and scheme == "https"
        )
        if allowed and parsed.userinfo:
            raise EgressRefused(
                "The URL must not contain a user name or password; credentials come from "
                "the tenant's Locker."
            )
        if allowed:
            return scheme, host, port
        own_names = {h: p for h, p in self.own_hosts}
        if scheme == "http" and host in own_names:
            raise EgressRefused(
                f"{self.integration} integrations reach {host} over HTTPS only: use "
                f"https://{host_entry(host, own_names[host])}."
            )
        raise EgressRefused(
            f"{self.integration} integrations may not connect to "
            f"{scheme}://{_bracketed(host)}:{port}: they reach "
            f"{self._own_list()} and the hosts the operator lists in setting {SETTING}. "
            f"To allow this host, {how_to_allow(host, port)}"
        )

    def resolve(self, host: str, port: int) -> list[str]:
        """The addresses a connection to ``host:port`` may use: resolved once, each checked.

        Raises EgressRefused when any address of the answer is not public (unless the
        operator listed this exact host:port), httpcore.ConnectError when it does not resolve.
        """
        try:
            answer = self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in answer))
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        if (host, port) in self.operator_hosts:
            return addresses
        for address in addresses:
            reason = self.classify(ipaddress.ip_address(address))
            if reason:
                raise EgressRefused(
                    f"{host} resolves to {address}, {reason}; {self.integration} integrations "
                    "do not connect to non-public addresses unless the operator lists that "
                    f"exact host and port. To allow it, {how_to_allow(host, port)}"
                )
        return addresses

    def _own_list(self) -> str:
        hosts = sorted(host_entry(h, p) for h, p in self.own_hosts)
        return ", ".join(f"https://{h}" for h in hosts) if hosts else "no host of their own"

    def _example(self) -> str:
        return min((host_entry(h, p) for h, p in self.own_hosts), default="api.example.com")


def _entries(values: Iterable[str]) -> list[str]:
    return [v for v in (str(v).strip() for v in values) if v]
