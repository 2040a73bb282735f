"""What the parse API's two HTTP backends share: the `ApiClient` protocol the processor
calls, its `Reply`, the errors a call can end in, and the hard limits on an answer (URL
parsing, the smuggling check on a head, the capped inflater). `httpclient` is ours on h11,
`httpxclient` the httpx one; both answer and fail alike.
"""

from __future__ import annotations

import importlib.metadata
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

__all__ = [
    "KEEPALIVE_EXPIRY_S",
    "MAX_BODY_BYTES",
    "MAX_DECODED_BYTES",
    "MAX_HEADERS",
    "USER_AGENT",
    "ApiClient",
    "BadEncoding",
    "ConnectFailed",
    "ConnectionLost",
    "HttpClientError",
    "Inflater",
    "InvalidUrl",
    "ProtocolFault",
    "Reply",
    "Timeout",
    "check_head",
    "parse_url",
]

KEEPALIVE_EXPIRY_S = 5.0
"""An idle connection older than this is closed: servers close idle ones after 5-75 s,
reusing one they are closing costs a failed call, and an idle one holds a descriptor."""
MAX_HEADERS = 100
"""Header lines over all heads of one answer (1xx included): a parse API sends ~10."""
MAX_BODY_BYTES = 1 << 20
"""Body bytes on the wire, whatever the framing (length, chunked, until close): a parse
result is a few hundred bytes, and 64 calls in flight then hold at most 64 MiB."""
MAX_DECODED_BYTES = 1 << 20
"""A gzip/deflate body inflated past this is a bomb (1 KiB of zeros packs to ~30 bytes):
the inflater stops at the cap instead of allocating what the body asks for."""
USER_AGENT = f"stream/{importlib.metadata.version('stream')}"
"""Sent with every call: WAF rules refuse requests without one (a 403, read as a bad token)."""


class HttpClientError(Exception):
    """A call that got no usable answer; the message names neither URL nor token."""


class ConnectFailed(HttpClientError):
    """No connection: refused, unreachable, DNS or TLS failure (the cause is chained)."""


class InvalidUrl(HttpClientError):
    """The URL's host cannot be encoded for DNS: every call would fail the same way."""


class Timeout(HttpClientError):
    """No complete answer within the call's deadline (connecting and writing included)."""


class ConnectionLost(HttpClientError):
    """The connection broke (reset, closed) before a whole answer."""


class ProtocolFault(HttpClientError):
    """The answer is not valid HTTP/1.1, is ambiguous, or exceeds one of the limits."""


class BadEncoding(HttpClientError):
    """The body's Content-Encoding is unknown or does not decode."""


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer: status, headers by lower-case name (repeats joined by ", "), body."""

    status: int
    headers: dict[str, str]
    body: bytes


class ApiClient(Protocol):
    """What the HTTP processor needs of a backend (ours or httpx)."""

    @property
    def open_connections(self) -> int: ...

    async def post(self, body: bytes, *, idempotency_key: str | None = None) -> Reply:
        """One POST within the call's deadline; raises an HttpClientError subclass."""
        ...

    async def aclose(self) -> None: ...


def parse_url(url: str) -> tuple[str, int, bool, str, str]:
    """(host, port, tls, authority, target) of an http(s) URL; InvalidUrl when the host
    cannot be encoded, ValueError when it is not an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http:// or https:// URL with a host is required")
    host = parts.hostname
    try:
        host.encode("idna")
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except (UnicodeError, ValueError):
        raise InvalidUrl("the host name or port of the URL cannot be encoded") from None
    authority = parts.netloc.rpartition("@")[2]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host, port, parts.scheme == "https", authority, target


def check_head(headers: Mapping[str, str], status: int) -> None:
    """Where h11 (and httpcore) are lenient, we are strict: both framings at once is how
    requests are smuggled; the answer is refused and its connection closed."""
    if "content-length" in headers and "transfer-encoding" in headers:
        raise ProtocolFault(f"HTTP {status} with both Content-Length and Transfer-Encoding")
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise ProtocolFault("Content-Length over the body limit")


class Inflater:
    """Decodes a body as it arrives, never past MAX_DECODED_BYTES."""

    def __init__(self, encoding: str) -> None:
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise BadEncoding(f"unsupported Content-Encoding {encoding[:40]!r}")
        # 32 + MAX_WBITS: a zlib or a gzip header, detected (RFC 9110's "deflate" is zlib).
        self._inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)
        self._size = 0

    def feed(self, data: bytes) -> bytes:
        try:
            out = self._inflater.decompress(data, MAX_DECODED_BYTES - self._size + 1)
        except zlib.error:
            raise BadEncoding("body does not decode") from None
        return self._counted(out)

    def finish(self) -> bytes:
        try:
            out = self._inflater.flush(MAX_DECODED_BYTES - self._size + 1)
        except zlib.error:
            raise BadEncoding("body does not decode") from None
        if not self._inflater.eof:
            raise BadEncoding("body is truncated")
        return self._counted(out)

    def _counted(self, out: bytes) -> bytes:
        self._size += len(out)
        if self._size > MAX_DECODED_BYTES:
            raise ProtocolFault("decoded body over the size limit")
        return out
