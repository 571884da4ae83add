"""What keeps a web page from driving the server through the user's browser.

A browser sends requests wherever a page tells it to, so without these checks any page the user
visits could drive a local-mode server (no credentials needed) or read its answers. Three checks
run on every request, before routing (:class:`BrowserGuard`); none affects a client that is not a
browser (the ``openai`` client, curl, httpx send no ``Origin`` and the ``Host`` they connect to):

* **Host** (DNS rebinding: a page whose name resolves to 127.0.0.1 is same-origin with the server
  in the browser's eyes). ``Host`` must name the server: the address the connection arrived on,
  the configured ``[server] host`` unless it is a wildcard, ``localhost``, ``127.0.0.1`` and
  ``[::1]`` when the connection arrived on loopback (each with the server's port, or no port, as
  browsers send it for the default port and proxies often do), or an ``[server] allowed_hosts``
  entry (``name`` for any port, ``name:port`` for one, ``.example.com`` for the domain and its
  subdomains). Anything else gets **421** (Misdirected Request, ``host_not_allowed``); a
  malformed or repeated ``Host``, or an HTTP/1.1 request without one, gets 400. An HTTP/1.0
  request without ``Host`` passes: browsers always send one.
* **Origin** (cross-site requests: forms and ``fetch`` POSTs need no CORS permission to be
  *sent*). A state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` is neither the
  server's own (the scheme's host and port as ``Host`` names them) nor listed in
  ``[server] cors_origins`` (``null`` included), or that has no ``Origin`` but
  ``Sec-Fetch-Site: cross-site`` or ``same-site``, gets **403** (``cross_site_request``). So does
  a CORS preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an origin not listed.
* **Content-Type** (the bodies a page can send without a preflight: ``text/plain``, forms). A
  state-changing request with a body must send ``application/json`` (or ``application/*+json``),
  unless its route declares another body type (a Litestar ``Body(media_type=...)``): else
  **415** (``unsupported_media_type``), naming the type expected.

CORS itself (the headers that let a listed origin read answers) is Litestar's, configured from
``[server] cors_origins`` by :func:`cors_config`; it is off when the list is empty.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.enums import RequestEncodingType
from litestar.exceptions import MethodNotAllowedException, NotFoundException
from litestar.params import BodyKwarg
from litestar.types import ASGIApp, Receive, Scope, Send
from litestar.utils import normalize_path

from hubbub.config import Config
from hubbub.errors import ConfigError
from hubbub.log import current_context
from hubbub_server.refusals import RefusalLog

__all__ = ["BrowserGuard", "check_browser_settings", "cors_config", "split_host"]

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""Methods a page must not send from another origin (those CORS does not stop from arriving)."""
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
"""Names a connection that arrived on loopback may use in ``Host``."""
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_JSON = "application/json"
_PROBLEM = b"application/problem+json"
_CACHE_LIMIT = 256
_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


Refusal = tuple[int, str, str, list[tuple[bytes, bytes]]]
"""Status, problem code, detail, extra response headers."""
HostVerdict = tuple[tuple[str, int | None] | None, Refusal | None]
"""``Host`` parsed (``None`` when malformed), and the refusal it deserves."""


class _BadHost(ValueError):
    """A ``Host`` (or origin) value that is not ``name[:port]``."""

    def __init__(self, value: str) -> None:
        super().__init__(f"{value!r} is not a host name with an optional port")


def split_host(value: str) -> tuple[str, int | None]:
    """``name[:port]`` as ``(name, port)``: lower case, without a trailing dot, IP literals in
    canonical form (IPv6 in brackets). Raises :class:`ValueError` for anything else, including
    a value with white space in it (which the router behind would not parse)."""
    if value != value.strip() or any(c.isspace() for c in value):
        raise _BadHost(value)
    value = value.lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise _BadHost(value)
        name, rest = value[: end + 1], value[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _BadHost(value)
        port_text = rest[1:] if rest else None
    elif value.count(":") > 1:
        raise _BadHost(value)  # an IPv6 address must be in brackets
    else:
        name, colon, port_text_or_empty = value.partition(":")
        port_text = port_text_or_empty if colon else None
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise _BadHost(value)
        port = int(port_text)
    return _canonical(name), port


def _canonical(name: str) -> str:
    name = name.rstrip(".")
    bracketed = name.startswith("[")
    try:
        address = ipaddress.ip_address(name[1:-1] if bracketed else name)
    except ValueError:
        if bracketed or not _NAME.fullmatch(name):
            raise _BadHost(name) from None
        return name
    if address.version == 6:
        mapped = address.ipv4_mapped  # how a dual-stack socket shows an IPv4 peer
        return mapped.compressed if mapped is not None else f"[{address.compressed}]"
    if bracketed:
        raise _BadHost(name)
    return address.compressed


def _configured_name(host: str) -> str | None:
    host = host.strip().lower()
    if host in _WILDCARDS:
        return None
    try:
        return _canonical(host.strip("[]") if ":" in host else host)
    except ValueError:
        return None  # not a name a client could send: only the connection's address counts


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _origin(value: str) -> str:
    """An origin as browsers serialise it: ``scheme://host[:port]``, lower case."""
    return value.strip().lower().rstrip("/")


def check_browser_settings(config: Config) -> None:
    """Raise :class:`ConfigError` (with the file and line) for an ``allowed_hosts`` entry that
    is not ``name``, ``name:port`` or ``.domain``, or a ``cors_origins`` entry that is not an
    origin (``https://app.example``, ``http://localhost:5173``)."""
    issues = []
    for entry in config.server.allowed_hosts:
        try:
            split_host(entry[1:] if entry.startswith(".") else entry)
        except ValueError:
            issues.append(
                config.issue(
                    "server.allowed_hosts",
                    f"{entry!r} is not a host name: use 'name', 'name:port' or '.domain'",
                )
            )
    for entry in config.server.cors_origins:
        scheme, sep, rest = _origin(entry).partition("://")
        try:
            valid = bool(sep) and scheme in _DEFAULT_PORTS and "/" not in rest
            split_host(rest)
        except ValueError:
            valid = False
        if not valid:
            issues.append(
                config.issue(
                    "server.cors_origins",
                    f"{entry!r} is not an origin: use 'https://host' or 'http://host:port' "
                    "(scheme, host and port only; '*' is not allowed)",
                )
            )
    if issues:
        raise ConfigError(issues)


def cors_config(config: Config) -> CORSConfig | None:
    """Litestar's CORS settings for ``[server] cors_origins``; ``None`` (CORS off) when empty.
    Bearer tokens, never cookies: credentials mode stays off."""
    origins = [_origin(origin) for origin in config.server.cors_origins]
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["authorization", "content-type", "last-event-id", "x-request-id"],
        expose_headers=["x-request-id"],
        allow_credentials=False,
        max_age=600,
    )


class _Allowed(msgspec.Struct, frozen=True):
    name: str
    port: int | None
    domain: bool = False

    def matches(self, name: str, port: int | None) -> bool:
        if self.domain:
            named = name == self.name or name.endswith("." + self.name)
        else:
            named = name == self.name
        return named and (self.port is None or port is None or port == self.port)


class BrowserGuard:
    """Pure ASGI middleware applying the checks of this module (see its docstring). It sits
    outside Litestar's routing and CORS middleware, inside the request middleware (so a
    refusal has a request id and is counted)."""

    def __init__(self, app: ASGIApp, litestar: Litestar, config: Config) -> None:
        self.app = app
        self.litestar = litestar
        server = config.server
        self.allowed = [
            _Allowed(*split_host(entry[1:]), domain=True)
            if entry.startswith(".")
            else _Allowed(*split_host(entry))
            for entry in server.allowed_hosts
        ]
        self.cors_origins = frozenset(_origin(origin) for origin in server.cors_origins)
        self.configured = _configured_name(server.host)
        """The configured ``[server] host`` as a ``Host`` name; ``None`` for a wildcard."""
        self.configured_port = server.port or None
        self.refusals = RefusalLog(
            "refused %d request%s in %.1f s that a web page could have sent (Host, Origin or "
            "Content-Type); the latest: %d for %s %s: %s",
            level=logging.INFO,
            interval=10.0,
        )
        """Refusals, logged at most every 10 s (a page can send many)."""
        self._names: dict[Any, frozenset[str]] = {}
        self._hosts: dict[Any, HostVerdict] = {}
        self._body_types: dict[int, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await self.app(scope, receive, send)
            return
        await self._http(scope, receive, send)

    async def _http(self, scope: Any, receive: Receive, send: Any) -> None:
        refusal = self._check(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, code, detail, extra = refusal
        self.refusals.record(status, scope["method"], scope["path"], detail)
        await _send_problem(scope, send, status, code, detail, extra)

    # -- the checks ---------------------------------------------------------------------------

    def _check(self, scope: Any) -> Refusal | None:
        hosts: list[bytes] = []
        origin = fetch_site = content_type = preflight = None
        body = False
        repeated: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"host":
                hosts.append(value)
            elif name == b"origin":
                repeated = name if origin is not None else repeated
                origin = value.decode("latin-1")
            elif name == b"sec-fetch-site":
                repeated = name if fetch_site is not None else repeated
                fetch_site = value.decode("latin-1").strip().lower()
            elif name == b"content-type":
                repeated = name if content_type is not None else repeated
                content_type = _JSON if value == b"application/json" else value.decode("latin-1")
            elif name == b"content-length":
                body = body or value.strip() not in (b"0", b"")
            elif name == b"transfer-encoding":
                body = True
            elif name == b"access-control-request-method":
                preflight = value
        if len(hosts) > 1:
            return 400, "bad_host", "the request has more than one Host header", []
        if repeated is not None:  # which one counts would depend on who reads it
            which = repeated.decode().title()
            return 400, "repeated_header", f"the request has more than one {which} header", []
        host: tuple[str, int | None] | None = None
        if not hosts and scope.get("http_version") == "1.1":  # RFC 9112 3.2: must be refused
            return 400, "bad_host", "an HTTP/1.1 request must send a Host header", []
        if hosts:
            key = (hosts[0], scope.get("server"))
            verdict = self._hosts.get(key)
            if verdict is None:
                verdict = self._host_verdict(scope, hosts[0].decode("latin-1"))
                if len(self._hosts) >= _CACHE_LIMIT:  # a client can send any Host: stay small
                    self._hosts.clear()
                self._hosts[key] = verdict
            host, refused = verdict
            if refused is not None:
                return refused
        method = scope["method"]
        if method == "OPTIONS" and preflight is not None and origin is not None:
            if not self._origin_allowed(origin, host):
                return 403, "cross_site_request", _cross_site(origin), []
            return None
        if method not in STATE_CHANGING:
            return None
        if origin is not None:
            if not self._origin_allowed(origin, host):
                return 403, "cross_site_request", _cross_site(origin), []
        elif fetch_site in ("cross-site", "same-site"):
            return (
                403,
                "cross_site_request",
                f"the browser says this request is {fetch_site}: a web page may call this API "
                "only from an origin listed in [server] cors_origins",
                [],
            )
        if body and not _is_json(content_type):
            expected = self._expected_body(scope)
            if expected is not None and not _same_type(content_type, expected):
                got = f"got {content_type.split(';')[0].strip()!r}" if content_type else "got none"
                header = b"accept-patch" if method == "PATCH" else b"accept-post"
                return (
                    415,
                    "unsupported_media_type",
                    f"the request body must be sent with Content-Type: {expected} ({got})",
                    [(header, expected.encode())],
                )
        return None

    def _host_verdict(self, scope: Any, text: str) -> HostVerdict:
        """``Host`` parsed, and the refusal it deserves (``None``: it names this server)."""
        try:
            host = split_host(text)
        except ValueError:
            return None, (400, "bad_host", f"the Host header {text!r} is malformed", [])
        if self._host_allowed(scope, *host):
            return host, None
        return host, (
            421,
            "host_not_allowed",
            f"this server does not answer for the host {text!r}: add it to "
            "[server] allowed_hosts if clients reach the server by that name",
            [],
        )

    def _host_allowed(self, scope: Any, name: str, port: int | None) -> bool:
        for allowed in self.allowed:
            if allowed.matches(name, port):
                return True
        server = scope.get("server")
        if server:
            names, server_port = self._local_names(server[0]), server[1]
        else:  # a UNIX socket, or an ASGI server that does not say
            names, server_port = self._local_names(None), self.configured_port
        return name in names and (port is None or server_port is None or port == server_port)

    def _local_names(self, address: str | None) -> frozenset[str]:
        """The names a connection that arrived on ``address`` may use."""
        names = self._names.get(address)
        if names is None:
            found = {self.configured} if self.configured else set()
            for candidate in (address, self.configured):
                if not candidate:
                    continue
                try:
                    canonical = _canonical(candidate)
                except ValueError:
                    continue
                found.add(canonical)
                if _is_loopback(canonical):
                    found.update(LOOPBACK_NAMES)
            names = frozenset(found)
            if len(self._names) < _CACHE_LIMIT:
                self._names[address] = names
        return names

    def _origin_allowed(self, origin: str, host: tuple[str, int | None] | None) -> bool:
        origin = _origin(origin)
        if origin in self.cors_origins:
            return True
        if host is None:
            return False
        scheme, sep, rest = origin.partition("://")
        default = _DEFAULT_PORTS.get(scheme)
        if not sep or default is None:
            return False  # "null" (a sandboxed frame, a file), or an unknown scheme
        try:
            name, port = split_host(rest)
        except ValueError:
            return False
        host_name, host_port = host
        return name == host_name and (port or default) == (host_port or default)

    def _expected_body(self, scope: Any) -> str | None:
        """The body type the request's route takes: ``application/json`` unless it declares
        another; ``None`` when no route matches (Litestar answers 404 or 405)."""
        path = scope["path"]
        if root := scope.get("root_path", ""):
            path = path.split(root, maxsplit=1)[-1]
        try:
            handler = self.litestar.asgi_router.handle_routing(
                path=normalize_path(path), method=scope["method"]
            )[1]
        except (NotFoundException, MethodNotAllowedException):
            return None  # routing will answer 404 or 405
        expected = self._body_types.get(id(handler))
        if expected is None:
            expected = _declared_body_type(handler)
            self._body_types[id(handler)] = expected
        return expected


def _declared_body_type(handler: Any) -> str:
    signature = getattr(handler, "parsed_fn_signature", None)
    data = signature.parameters.get("data") if signature is not None else None
    definition = getattr(data, "kwarg_definition", None)
    if isinstance(definition, BodyKwarg) and definition.media_type != RequestEncodingType.JSON:
        return str(getattr(definition.media_type, "value", definition.media_type))
    return _JSON


def _is_json(content_type: str | None) -> bool:
    if content_type is _JSON:
        return True
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == _JSON or (media.startswith("application/") and media.endswith("+json"))


def _same_type(content_type: str | None, expected: str) -> bool:
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == expected


def _cross_site(origin: str) -> str:
    return (
        f"cross-site request refused: the origin {origin.strip()!r} is not this server's; a "
        "web page may call this API only from an origin listed in [server] cors_origins"
    )


async def _send_problem(
    scope: Any,
    send: Any,
    status: int,
    code: str,
    detail: str,
    extra: Iterable[tuple[bytes, bytes]],
) -> None:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    request_id = current_context().get("request_id")
    if request_id:
        body["request_id"] = request_id
    if scope["path"].startswith("/v1/"):  # as problems.py does: OpenAI clients read `error`
        body["error"] = {"message": detail, "type": code, "code": code, "param": None}
    payload = msgspec.json.encode(body)
    # Close the connection: the request's body, if any, was not read.
    headers = [
        (b"content-type", _PROBLEM),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
