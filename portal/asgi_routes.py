"""What a raw ASGI route in front of Django must check and add so it answers as Django's path would.

Two endpoints are answered in front of Django's ASGI handler (the bundle long poll,
`governance.api.bundle.asgi_bundle_route`, and the audit batch POST,
`audit.api.events_route.asgi_events_route`); each hands a request over to Django whenever
Django's middleware would answer it differently, and adds the headers that middleware would
add by running it. `DjangoMirror` is that rule, written once for both.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.request import split_domain_port, validate_host
from django.utils.module_loading import import_string

# Response middleware whose headers a route adds itself, by running it.
MIRRORED_MIDDLEWARE = ("django.middleware.security.SecurityMiddleware", "csp.middleware.CSPMiddleware")


def middleware_headers(path: str, *, method: str, secure: bool, status: int) -> list[tuple[bytes, bytes]]:
    """The headers the mirrored response middleware of settings.MIDDLEWARE adds to an answer on
    `path` (HSTS, nosniff, referrer and opener policies, CSP): computed by running that
    middleware on a stand-in request, so a route follows every setting it reads."""
    request = HttpRequest()
    request.method = method
    request.path = request.path_info = path
    request.is_secure = lambda: secure
    response = HttpResponse(status=status)
    del response["Content-Type"]
    for dotted in settings.MIDDLEWARE:
        if dotted in MIRRORED_MIDDLEWARE:
            response = import_string(dotted)(lambda _request: None).process_response(request, response)
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.items()]


def has_nul(query: dict[str, list[str]]) -> bool:
    return any("\x00" in key or any("\x00" in v for v in values) for key, values in query.items())


def request_headers(scope) -> dict[str, str]:
    """The request's headers, names lower-cased (the last of a repeated header wins)."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}


def request_query(scope) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


class DjangoMirror:
    """The settings a route in front of Django mirrors, for answers on `path`, a `method` route.

    A host not in ALLOWED_HOSTS (Django answers 400), plain HTTP under SECURE_SSL_REDIRECT
    (Django redirects) and a NUL byte in the query (RejectNulMiddleware answers 400) go to
    Django; the response headers of SecurityMiddleware and django-csp are made by running that
    middleware (`middleware_headers`), once per (https, status). The session, CSRF,
    authentication and clickjacking middleware do not apply to a bearer-token endpoint that
    answers JOSE or JSON.
    """

    def __init__(self, path: str, method: str) -> None:
        self.path, self.method = path, method
        proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
        self.proxy_header = proxy_header
        self.proxy_name = (
            proxy_header[0].removeprefix("HTTP_").replace("_", "-").lower() if proxy_header else ""
        )
        self._headers: dict[tuple[bool, int], list[tuple[bytes, bytes]]] = {}

    def is_secure(self, scope, headers: dict[str, str]) -> bool:
        return scope.get("scheme") == "https" or bool(
            self.proxy_header and headers.get(self.proxy_name) == self.proxy_header[1]
        )

    def handled_by_django(self, scope, headers: dict[str, str], query: dict[str, list[str]]) -> bool:
        domain, _port = split_domain_port(headers.get("host", ""))
        allowed = settings.ALLOWED_HOSTS or ([".localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
        if not domain or not validate_host(domain, allowed):
            return True  # Django answers 400 (DisallowedHost)
        if has_nul(query):
            return True  # RejectNulMiddleware answers 400
        return bool(settings.SECURE_SSL_REDIRECT and not self.is_secure(scope, headers))

    def security_headers(self, scope, headers: dict[str, str], status: int) -> list[tuple[bytes, bytes]]:
        key = (self.is_secure(scope, headers), status)
        if key not in self._headers:
            self._headers[key] = middleware_headers(
                self.path, method=self.method, secure=key[0], status=status
            )
        return self._headers[key]
