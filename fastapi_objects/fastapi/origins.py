"""Which pages may open a websocket to this app: same-origin by default (Phoenix's check_origin).

A browser sends the page's ``Origin`` with every websocket upgrade, and sends the visitor's
cookies along whatever page opened it: without this check any site could attach as its
visitors (cross-site websocket hijacking). An upgrade is accepted when

- it has no ``Origin`` (not a browser: a script, another server, a test client);
- its ``Origin`` is the request's own host (``Host``), the port included when ``Host`` names
  one, else a default port (80/443: behind a proxy the scheme the browser saw is unknown);
- its ``Origin`` is listed in ``allowed_origins`` (``"https://app.example.com"``), or the
  list holds ``"*"`` (any origin: the app opts out of the check).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_allowed(headers: Mapping[str, str], allowed: Sequence[str] | None) -> bool:
    """Whether an upgrade with these headers may attach (see the module docstring)."""
    origin = headers.get("origin")
    if origin is None:
        return True
    if allowed is not None:
        if "*" in allowed:
            return True
        if _normal(origin) in {_normal(entry) for entry in allowed}:
            return True
    return _same_origin(origin, headers.get("host"))


def _normal(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def _same_origin(origin: str, host: str | None) -> bool:
    if not host:
        return False
    try:
        page = urlsplit(origin.strip())
        here = urlsplit("//" + host.strip())
        page_port, here_port = page.port, here.port  # ValueError: not a port number
    except ValueError:
        return False
    default = _DEFAULT_PORTS.get(page.scheme)
    if default is None or page.hostname is None or page.hostname != here.hostname:
        return False
    if here_port is None:
        return page_port in (None, default)
    return (page_port or default) == here_port
