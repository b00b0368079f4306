"""What a browser may do with the service: the Host and Origin checks, and the security headers of every answer.

A server on loopback without an API key trusts whoever can connect to it, and that includes every web page its user
has open:
- a page of another site can send a "simple" request (a `text/plain` body, or a form's multipart upload) to
  http://127.0.0.1:8000 without a CORS preflight. Its browser hides the answer from the page, but the server would
  still do the work. Such a request carries the page's `Origin`, so one that is neither this server's own origin
  nor an allowed CORS origin is refused (403) before its body is read;
- DNS rebinding: a page of attacker.example whose name is then pointed at 127.0.0.1 is, for the browser, on the
  same origin as the server and could read /v1/model (absolute paths of this machine). Its requests still say
  `Host: attacker.example`, so a request whose Host is not a name of this server is refused (400).
The headers keep the page out of other sites' frames, stop content sniffing, send no referrer, and allow the page
only its own script, style and images (`Content-Security-Policy`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from egtr.serve.limits import ASGIApp, Message, Receive, Scope, Send, send_error
from egtr.serve.settings import is_loopback

# The page uses only its own files, blob: URLs of the chosen image and a data: favicon; no inline code or style.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_name(host: str) -> str:
    """The name part of a Host header or of an --allowed-hosts entry, lower case: 'Example.org:8000' ->
    'example.org', '[::1]:8000' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else ""
    return host.partition(":")[0].rstrip(".")


def is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def bound_name(bind_host: str) -> str:
    """An address to listen on as a Host header names it: '[::1]' and '::1' -> '::1', 'LocalHost' -> 'localhost'."""
    return bind_host.strip().strip("[]").lower()


def is_wildcard(bind_host: str) -> bool:
    """0.0.0.0 or :: (every address of the machine)."""
    name = bound_name(bind_host)
    return is_address(name) and ipaddress.ip_address(name).is_unspecified


@dataclass(frozen=True)
class AllowedHosts:
    """The Host names a server answers to.

    Attributes:
        names: exact names, and `*.example.org` for every name under example.org.
        any_address: any IP address (a wildcard bind, whose addresses are not known in advance: health checks
            and clients that connect by address send it; a rebinding page always sends its own DNS name).
        any_name: every Host ('*' given: the check is off).
    """

    names: frozenset[str]
    any_address: bool = False
    any_name: bool = False

    @classmethod
    def for_bind(cls, bind_host: str, allowed_hosts: tuple[str, ...] = ()) -> AllowedHosts:
        """The bound name or address (and for loopback and wildcard binds, localhost, 127.0.0.1 and [::1]), plus
        `allowed_hosts` (names a proxy or a DNS entry uses)."""
        wildcard = is_wildcard(bind_host)
        names = {host_name(name) for name in allowed_hosts}
        if not wildcard:
            names.add(bound_name(bind_host))
        if wildcard or is_loopback(bind_host):
            names.update(LOOPBACK_NAMES)
        return cls(frozenset(names - {"*", ""}), any_address=wildcard, any_name="*" in names)

    def allows(self, host: str) -> bool:
        name = host_name(host)
        if self.any_name or name in self.names:
            return True
        if not name:  # no Host header at all (HTTP/1.0): every browser sends one
            return False
        if self.any_address and is_address(name):
            return True
        return any(pattern.startswith("*.") and name.endswith(pattern[1:]) for pattern in self.names)

    def describe(self) -> str:
        shown = sorted(f"[{name}]" if ":" in name else name for name in self.names)
        return ", ".join(shown + (["any IP address"] if self.any_address else []))


def same_origin(origin: str, host: str) -> bool:
    """Whether a browser's `Origin` names the server that received the request as `Host` (the scheme is not
    compared: behind a TLS proxy the page is https while this server speaks http)."""
    page, server = urlsplit(origin), urlsplit("//" + host)
    if page.scheme not in ("http", "https") or not page.hostname:
        return False
    default_port = 443 if page.scheme == "https" else 80
    try:
        return page.hostname == server.hostname and (page.port or default_port) == (server.port or default_port)
    except ValueError:  # a port that is not a number
        return False


class BrowserGuard:
    """Refuse, before the application sees them, requests with a Host that is not this server's (400
    `host_not_allowed`) and requests sent by pages of other origins than this server's own and `cors_origins`
    (403 `cross_origin`)."""

    def __init__(self, app: ASGIApp, hosts: AllowedHosts, cors_origins: tuple[str, ...]) -> None:
        self.app = app
        self.hosts = hosts
        self.cors_origins = frozenset(cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value.decode("latin-1") for name, value in scope.get("headers") or []}
        host, origin = headers.get(b"host", ""), headers.get(b"origin")
        if not self.hosts.allows(host):
            message = (
                f"Host {host!r} is not a name of this server (it answers to {self.hosts.describe()}); "
                "a proxy or a DNS name in front of it is added with --allowed-hosts"
            )
            await send_error(send, 400, "host_not_allowed", message)
            return
        if origin is not None and origin not in self.cors_origins and not same_origin(origin, host):
            message = f"requests from pages of {origin} are refused; allow that origin with --cors-origin {origin}"
            await send_error(send, 403, "cross_origin", message)
            return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Add `SECURITY_HEADERS` to every answer (those an answer sets itself are kept)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in self.headers if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
