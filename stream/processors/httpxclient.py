"""The parse API client on httpx: for what our own leaves out, behind the same interface.

`STREAM_HTTP_CLIENT=httpx` selects it, for deployments that need `HTTPS_PROXY`/`NO_PROXY`
(read from the environment, as httpx does with `trust_env`) or a TLS client certificate
(`STREAM_API_CLIENT_CERT`, `STREAM_API_CLIENT_KEY`). It costs more CPU per call than ours
(see the docs' figures), so it is not the default.

The same limits hold as for our client: the body is read raw and counted against
MAX_BODY_BYTES, decoded by the same capped Inflater, the head checked by `check_head`, one
deadline covers the whole call, and every exception becomes an HttpClientError subclass.
httpcore (under httpx) skips any number of 1xx heads: a flood of them ends at the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping

import httpx

from stream.errors import ConfigError
from stream.processors.apiclient import (
    KEEPALIVE_EXPIRY_S,
    MAX_BODY_BYTES,
    MAX_HEADERS,
    USER_AGENT,
    ConnectFailed,
    ConnectionLost,
    Inflater,
    InvalidUrl,
    ProtocolFault,
    Reply,
    Timeout,
    check_head,
    parse_url,
)

__all__ = ["HttpxClient"]

# httpx logs every request at INFO: a line per SMS, and the CPU to format it.
logging.getLogger("httpx").setLevel(logging.WARNING)


def _joined(headers: httpx.Headers) -> dict[str, str]:
    joined: dict[str, str] = {}
    for name, value in headers.multi_items():
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return joined


class HttpxClient:
    """POSTs bodies to one URL with an httpx.AsyncClient (HTTP/1.1, no redirects)."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout_s: float,
        connect_timeout_s: float,
        client_cert: str = "",
        client_key: str = "",
    ) -> None:
        self._url_fault: InvalidUrl | None = None
        try:
            parse_url(url)
        except InvalidUrl as exc:
            self._url_fault = exc
        tls = ssl.create_default_context()
        if client_cert:
            try:
                tls.load_cert_chain(client_cert, client_key or None)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    "STREAM_API_CLIENT_CERT", f"not a usable certificate and key: {exc}"
                ) from None
        self._url = url
        self._timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            headers={"user-agent": USER_AGENT, "accept-encoding": "gzip, deflate"} | dict(headers),
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(
                max_connections=None,
                max_keepalive_connections=None,
                keepalive_expiry=KEEPALIVE_EXPIRY_S,
            ),
            verify=tls,
            trust_env=True,
            follow_redirects=False,
        )
        self._open = 0
        self._closed = False

    @property
    def open_connections(self) -> int:
        """Calls in flight: httpcore's pool does not say how many connections it holds."""
        return self._open

    async def post(self, body: bytes, *, idempotency_key: str | None = None) -> Reply:
        """One POST within the call's deadline; raises a HttpClientError subclass."""
        if self._url_fault is not None:
            raise self._url_fault
        if self._closed:
            raise ConnectFailed("client closed")
        extra = {"idempotency-key": idempotency_key} if idempotency_key is not None else None
        self._open += 1
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._exchange(body, extra)
        except TimeoutError:
            raise Timeout("no answer within the timeout") from None
        except httpx.TimeoutException:
            raise Timeout("no answer within the timeout") from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL, UnicodeError):
            raise InvalidUrl("the URL's host cannot be used") from None
        except httpx.ConnectError as exc:
            raise ConnectFailed(f"cannot connect: {type(exc).__name__}") from exc
        except (httpx.ProtocolError, httpx.DecodingError) as exc:
            raise ProtocolFault(f"malformed answer: {exc}") from None
        except httpx.HTTPError as exc:  # read, write, close, proxy errors
            raise ConnectionLost(f"connection failed: {type(exc).__name__}") from exc
        finally:
            self._open -= 1

    async def _exchange(self, body: bytes, extra: dict[str, str] | None) -> Reply:
        async with self._client.stream("POST", self._url, content=body, headers=extra) as answer:
            if len(answer.headers.raw) > MAX_HEADERS:
                raise ProtocolFault("too many header lines")
            headers = _joined(answer.headers)
            check_head(headers, answer.status_code)
            encoding = headers.get("content-encoding", "").strip().lower()
            decoder = Inflater(encoding) if encoding not in ("", "identity") else None
            parts: list[bytes] = []
            size = 0
            async for data in answer.aiter_raw():
                size += len(data)
                if size > MAX_BODY_BYTES:
                    raise ProtocolFault("body over the size limit")
                parts.append(decoder.feed(data) if decoder else data)
            if decoder is not None:
                parts.append(decoder.finish())
            return Reply(answer.status_code, headers, b"".join(parts))

    async def aclose(self) -> None:
        """Close the pool; later calls raise ConnectFailed."""
        self._closed = True
        await self._client.aclose()
