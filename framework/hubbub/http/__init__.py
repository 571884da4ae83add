"""``hubbub.http``: a small, fast, pooled HTTP/1.1 client for talking to one upstream origin.

Built on an :class:`asyncio.Protocol` and httptools' parser (llhttp) because, measured on this
project's gateway path, it does about twice the requests per second of aiohttp. It does what an
LLM provider needs and nothing else: keep-alive pooling, streaming bodies, TLS (verifying by
default), bounded sizes, timeouts and prompt cancellation. No proxies, no redirects, no
decompression, no cookies, no HTTP/2: a provider that needs one of those uses another client.

.. code-block:: python

    client = HttpClient("https://api.openai.com/v1", max_connections=100)
    response = await client.request(
        "POST", "/chat/completions", body=payload,
        headers=[("content-type", "application/json"), ("authorization", f"Bearer {key}")],
    )
    response.status, response.headers.get("retry-after"), response.body
    async with client.stream("POST", "/chat/completions", body=payload, headers=...) as resp:
        async for piece in resp:  # body bytes as they arrive
            ...
    await client.aclose()

See :mod:`hubbub.http.client` for the semantics (pooling, retries on stale connections,
cancellation) and :mod:`hubbub.http.errors` for the errors.

One retry happens inside the client, for every method: when a *reused* keep-alive connection
turns out closed before any byte of the response arrived (the upstream closed it as it was
being reused: the keep-alive race), the request is sent again, once, on a fresh connection.
Almost always the upstream never read it; in the rare case it had accepted the request and then
closed without answering, a ``POST`` is processed twice: for an LLM, one generation billed
twice. Pass ``retry_stale=False`` to :meth:`HttpClient.request` or :meth:`HttpClient.stream`
to get the :class:`ConnectionClosedError` instead.
"""

from __future__ import annotations

from hubbub.http.client import Body, HttpClient, PoolStats
from hubbub.http.errors import (
    ClientClosedError,
    ConnectError,
    ConnectionClosedError,
    ConnectTimeoutError,
    HttpError,
    PoolFullError,
    ProtocolError,
    ReadTimeoutError,
    ResponseTooLargeError,
    TLSError,
)
from hubbub.http.headers import Headers, RequestHeaders
from hubbub.http.response import Response, StreamingResponse

__all__ = [
    "Body",
    "ClientClosedError",
    "ConnectError",
    "ConnectTimeoutError",
    "ConnectionClosedError",
    "Headers",
    "HttpClient",
    "HttpError",
    "PoolFullError",
    "PoolStats",
    "ProtocolError",
    "ReadTimeoutError",
    "RequestHeaders",
    "Response",
    "ResponseTooLargeError",
    "StreamingResponse",
    "TLSError",
]
