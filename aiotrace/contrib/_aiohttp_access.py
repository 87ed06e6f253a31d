"""Who may use the debug endpoints: loopback clients, and a bearer token.

The client's address is the connection's peer, read from the transport:
never ``request.remote``, which a forwarding middleware may have rewritten
from a header, and never a header itself. A loopback connection that
carries forwarding headers came through a local proxy, so it is not taken
for a local client unless a token is required anyway.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from typing import Final

from aiohttp import web

_PROXY_HEADERS: Final = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


class Access:
    """Access decides whether a request may use the debug endpoints.

    Invariant: ``token`` is None (no token required) or non-empty bytes.
    """

    __slots__ = ("allow_remote", "token")

    def __init__(self, *, token: str | None, allow_remote: bool) -> None:
        if not isinstance(allow_remote, bool):
            raise TypeError(
                "aiotrace: allow_remote must be True or False, "
                f"got {type(allow_remote).__name__}"
            )
        if token is not None:
            if not isinstance(token, str):
                raise TypeError(
                    f"aiotrace: token must be a str or None, got {type(token).__name__}"
                )
            if not token or token != token.strip() or not token.isprintable():
                raise ValueError(
                    "aiotrace: token must be a non-empty printable string without "
                    "surrounding spaces, e.g. secrets.token_urlsafe(32)"
                )
        if allow_remote and token is None:
            raise ValueError(
                "aiotrace: allow_remote=True exposes traces of this process to any "
                "client that can reach it; it needs a token (token=...)"
            )
        self.allow_remote = allow_remote
        self.token = None if token is None else token.encode()

    def refuse(self, request: web.Request) -> web.Response | None:
        """Returns the error response for a request that may not pass, or None."""
        if not self.allow_remote:
            peer = _peer(request)
            if peer is None:
                return _error(403, "the client's address is unknown")
            if not _is_local(peer):
                return _error(
                    403,
                    f"only loopback clients may use this endpoint, not {peer}; "
                    "the server opens it to others with allow_remote=True and a token",
                )
            if self.token is None and any(h in request.headers for h in _PROXY_HEADERS):
                return _error(
                    403,
                    "this request came through a proxy (it carries forwarding "
                    "headers), so it is not from a local client",
                )
        if self.token is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                return _error(
                    401,
                    "this endpoint needs 'Authorization: Bearer <token>'",
                    headers={"WWW-Authenticate": 'Bearer realm="aiotrace"'},
                )
            try:
                # aiohttp decodes header bytes that are not UTF-8 as surrogates.
                presented = given.strip().encode()
            except UnicodeEncodeError:
                return _error(
                    401,
                    "the bearer token is not valid UTF-8",
                    headers={"WWW-Authenticate": 'Bearer realm="aiotrace"'},
                )
            if not hmac.compare_digest(presented, self.token):
                return _error(403, "the bearer token is wrong")
        return None


def _peer(request: web.Request) -> str | None:
    """Returns the connection's peer address, ``"unix"`` for a Unix socket."""
    transport = request.transport
    if transport is None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is not None and getattr(socket, "AF_UNIX", None) == sock.family:
        return "unix"
    peername = transport.get_extra_info("peername")
    if isinstance(peername, list | tuple) and peername:
        return str(peername[0])
    return None


def _is_local(peer: str) -> bool:
    if peer == "unix":  # reaching the socket file already took local access
        return True
    try:
        address = ipaddress.ip_address(peer.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def _error(
    status: int, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(status=status, text=f"aiotrace: {message}\n", headers=headers)
