"""The dashboard's HTTP server: the standard library's ThreadingHTTPServer, one static page and
the JSON API (:mod:`.api`), every request checked by :mod:`.security` first.

The page is three files shipped in the package (``static/``), served from a fixed list: no
request maps to a file path, and nothing is fetched from anywhere else, so it works offline.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING, Any

from ..httpguard import HttpError, json_object, read_body
from ..training.control import BODY_TIMEOUT_S
from . import api, remote, training
from .locations import Sites
from .security import Guard

if TYPE_CHECKING:
    from typing_extensions import Self

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# How often the serving loop looks for a stop request: stop() returns within this.
STOP_POLL_S = 0.05

class Dashboard:
    """A dashboard of ``locations`` served on ``host``:``port`` (0 picks a free port).

    ``url`` is what to open (with ``?token=...`` off loopback). ``unpickle`` allows showing
    the repr of values from an unsigned location. Raises ValueError for a location that cannot
    be opened, OSError when the address cannot be bound.
    """

    def __init__(
        self,
        locations: Sequence[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        storage_options: Mapping[str, Any] | None = None,
        key: str | None = None,
        unpickle: bool = False,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int in 0..65535 (0 picks a free one), got {port!r}")
        sites = Sites(locations, storage_options=storage_options, key=key)
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        bound_host, bound_port = self._httpd.server_address[:2]
        self.host, self.port = str(bound_host), int(bound_port)
        self.guard = Guard(self.host, self.port)
        self.context = api.Context(sites, self.guard, remote.Prober(), bool(unpickle))
        self._httpd.context = self.context  # type: ignore[attr-defined]
        shown = socket.gethostname() if self.host in ("0.0.0.0", "::") else self.host
        base = f"http://{f'[{shown}]' if ':' in shown else shown}:{self.port}/"
        self.url = base if self.guard.token is None else f"{base}?token={self.guard.token}"
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Dashboard({self.url.split('?', 1)[0]!r})"

    def serve_forever(self) -> None:
        """Serve on this thread until :meth:`stop` (or KeyboardInterrupt)."""
        self._httpd.serve_forever(STOP_POLL_S)

    def start(self) -> Self:
        """Serve on a background thread; returns self."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(STOP_POLL_S,), name="checkpoint-dashboard",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; calling it twice is harmless."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    server_version = "checkpoint_flow"
    timeout = BODY_TIMEOUT_S

    @property
    def context(self) -> api.Context:
        return self.server.context  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("dashboard %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        parts = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        try:
            if self.context.guard.admit(self.headers, query):
                self._redirect_keeping_token(parts, query)
                return
            if method == "GET" and parts.path in STATIC:
                self._static(*STATIC[parts.path])
                return
            match = api.EVENTS.fullmatch(parts.path)
            if match is not None and method == "GET":
                self._events(match["site"], query)
                return
            route, site = api.find(self.context, method, parts.path)
            body: dict[str, Any] = {}
            if method == "POST":
                self.context.guard.check_change(self.headers)
                raw = read_body(self.rfile, self.headers, limit=MAX_BODY)
                body = json_object(raw, fields=route.fields)
            status, reply = api.call(self.context, route, site, query, body)
        except HttpError as exc:
            if method == "POST":
                self.close_connection = True  # what is left of the body is not a request
            self._json(exc.status, {"error": exc.message})
            return
        except Exception as exc:  # noqa: BLE001 - a page gets a message, the log the traceback
            logger.exception("dashboard request %s %s failed", method, parts.path)
            self._json(500, {"error": f"{type(exc).__name__}: {exc}"})
            return
        self._json(status, reply)

    def _headers(self, status: int, content_type: str, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(_nan_free(body), default=str).encode()
        self._headers(status, "application/json", len(data))
        self.wfile.write(data)

    def _static(self, name: str, content_type: str) -> None:
        data = resources.files(__package__).joinpath("static").joinpath(name).read_bytes()
        self._headers(200, content_type, len(data))
        self.wfile.write(data)

    def _redirect_keeping_token(
        self, parts: urllib.parse.SplitResult, query: dict[str, str]
    ) -> None:
        query.pop("token", None)
        target = parts.path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        self.send_response(303)
        self.send_header("Location", target)
        self.send_header("Set-Cookie", self.context.guard.set_cookie())
        self.send_header("Content-Length", "0")
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()

    def _events(self, site_text: str, query: Mapping[str, str]) -> None:
        site = self.context.sites.get(site_text)
        endpoint = training.endpoint_of(site, query.get("manager") or None)
        self.close_connection = True
        self._headers(200, "text/event-stream")

        def write(data: bytes) -> None:
            self.wfile.write(data)
            self.wfile.flush()

        try:
            remote.relay_events(endpoint, self.headers.get("Last-Event-ID"), write)
        except (OSError, HttpError) as exc:  # either side went away; the page reconnects
            logger.debug("event relay from %s ended: %s", endpoint.url, exc)


def _nan_free(value: Any) -> Any:
    """NaN and infinite metrics as null: the page's JSON parser rejects them."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _nan_free(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_free(v) for v in value]
    return value
