"""A small HTTP control endpoint for a running training job (stdlib ``http.server`` in a thread).

- ``POST /save`` (alias ``/save_checkpoint``) with an optional JSON body ``{"name": "before lr
  drop"}`` asks for a save at the next boundary; the loop is never blocked. Names are letters,
  digits, spaces, ``-`` and ``_``; spaces become underscores in the file name. The reply waits
  up to 30 s: 200 ``{"file"}`` once written, 202 ``{"status": "pending", "id"}`` if the loop
  has not reached a boundary yet, 400 for a bad name, an unknown field or a malformed body
  (nothing is asked for), 409 for a name that is saved already (nothing is overwritten), 500
  ``{"error", "id"}`` if the save failed. The ``X-Request-Id`` header of an accepted request's
  reply is the ``id`` its events carry.
- ``GET /checkpoints`` (alias ``/list_checkpoints``): the checkpoints with their epoch, step,
  metrics, info, role, whether each is the latest or the best, and the manager's metadata.
- ``GET /status``: the manager's name and the epoch and step the loop reported last.
- ``GET /events``: server-sent events, one ``save`` event per change of a request (``requested``,
  ``saved`` with the file, epoch and step, ``failed`` with the reason).

Every request must name a loopback host when the endpoint listens on loopback; a request that
asks for a save is refused when a browser sends it from another site. On any other host every
request needs the endpoint's token (``Authorization: Bearer <token>``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import socket
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointExistsError
from ..httpguard import (
    HttpError,
    bearer_token,
    check_host,
    check_same_origin,
    is_loopback,
    json_object,
    new_token,
    read_body,
    tokens_match,
)
from . import live
from .events import EventStream
from .naming import Naming
from .records import CheckpointInfo
from .storage import TrainingStorage

if TYPE_CHECKING:
    from typing_extensions import Self

logger = logging.getLogger(__name__)

SAVE_WAIT_S = 30.0
# How long a client may take to send a request's body; a body that stalls is refused unread.
BODY_TIMEOUT_S = 10.0
# Server-sent event streams send a comment this often, so a client that left is noticed.
HEARTBEAT_S = 10.0
_MAX_BODY = 64 * 1024
SAVE_ROUTES = ("/save", "/save_checkpoint")
LIST_ROUTES = ("/checkpoints", "/list_checkpoints")
SAVE_FIELDS = ("name",)


# How often the serving loop looks for a stop request: stop() returns within this.
STOP_POLL_S = 0.05


@dataclass(frozen=True)
class ControlTarget:
    """What an endpoint serves: the manager's ``name``, ``location`` and ``metadata``, and
    callables reading its progress and checkpoints and asking for a save of a name that is not
    saved yet (``request_save``, raising as ``request_save(name, replace=False)`` does).
    ``owner`` is only held on to: a running endpoint keeps its manager, and so the manager's
    run lock, alive."""

    name: str | None
    location: str
    metadata: Mapping[str, Any]
    position: Callable[[], tuple[int | None, int | None]]
    checkpoints: Callable[[], list[CheckpointInfo]]
    latest: Callable[[], str | None]
    checkpoint_info: Callable[[str], CheckpointInfo | None]
    request_save: Callable[[str | None], Future[str]]
    owner: object = None


class ControlServer:
    """A running control endpoint; ``url`` to reach it, ``token`` (None on loopback) to
    authenticate, ``stop()`` (or ``with``) to end it. ``on_stop`` is called with the server
    once it has stopped."""

    def __init__(
        self,
        target: ControlTarget,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        on_stop: Callable[[ControlServer], object] | None = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int in 0..65535 (0 picks a free one), got {port!r}")
        self.target = target
        self._on_stop = on_stop
        self.token = None if is_loopback(host) else new_token()
        self.events = EventStream()
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        bound_host, bound_port = self._httpd.server_address[:2]
        self.host, self.port = str(bound_host), int(bound_port)
        self.url = f"http://{_url_host(self.host)}:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(STOP_POLL_S,), name="checkpoint-control",
            daemon=True,
        )
        self._thread.start()
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._unregister: Callable[[], Any] | None = None
        if self.token is not None:
            logger.warning(
                "checkpoint control endpoint at %s listens on %s: every request needs its "
                "token (server.token, also in the location's control file)",
                self.url,
                host,
            )
        logger.info("checkpoint control endpoint at %s", self.url)

    def __repr__(self) -> str:
        return f"ControlServer({self.url!r})"

    def register(self, storage: TrainingStorage, naming: Naming) -> None:
        """Name this endpoint in the location's control file until it stops (or the process
        ends), so that a dashboard reading the location finds it."""
        live.register(storage, naming, live.LiveEndpoint.here(naming.name, self.url, self.token))
        self._unregister = weakref.finalize(self, live.unregister, storage, naming, self.url)

    def stop(self) -> None:
        """Stop serving, close the socket and remove the control file; calling it twice is
        harmless."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self.events.close()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        if self._unregister is not None:
            self._unregister()
        if self._on_stop is not None:
            self._on_stop(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ what the routes do

    def listing(self) -> list[dict[str, Any]]:
        target = self.target
        infos = target.checkpoints()
        latest = target.latest()
        best = {c.source for c in infos if c.role == "best"}
        listing = []
        for info in infos:
            entry = dataclasses.asdict(info)
            entry["latest"] = info.file == latest
            entry["best"] = info.file in best
            entry["metadata"] = dict(target.metadata)
            listing.append(entry)
        return listing

    def status(self) -> dict[str, Any]:
        epoch, step = self.target.position()
        return {"manager": self.target.name, "epoch": epoch, "step": step,
                "location": self.target.location}

    def save(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
        """Ask for a save; the status, the reply and the request's id once it is written,
        pending or failed. Raises HttpError for a request that is refused."""
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise HttpError(400, f'"name" must be a string, got {name!r}')
        try:
            future = self.target.request_save(name)
        except CheckpointExistsError as exc:
            raise HttpError(409, str(exc)) from None
        except (ValueError, TypeError) as exc:
            raise HttpError(400, str(exc)) from None
        except RuntimeError as exc:  # the manager is closed or read-only
            raise HttpError(503, str(exc)) from None
        request = uuid.uuid4().hex[:12]
        self.events.publish("save", {"id": request, "status": "requested", "name": name})
        future.add_done_callback(lambda done: self._publish_outcome(request, name, done))
        try:
            file = future.result(timeout=SAVE_WAIT_S)
        except TimeoutError:
            return 202, {"status": "pending", "id": request}, request
        except CheckpointExistsError as exc:
            return 409, {"error": str(exc), "id": request}, request
        except Exception as exc:  # noqa: BLE001 - the save's own error, reported to the client
            return 500, {"error": str(exc), "id": request}, request
        return 200, {"file": file}, request

    def _saved(self, file: str) -> dict[str, Any]:
        info = self.target.checkpoint_info(file)
        return {
            "file": file,
            "epoch": None if info is None else info.epoch,
            "step": None if info is None else info.step,
            "location": self.target.location,
        }

    def _publish_outcome(
        self, request: str, name: str | None, done: concurrent.futures.Future[str]
    ) -> None:
        # Runs in the writer thread (or the loop's): it must not wait for anything.
        if done.cancelled():
            data: dict[str, Any] = {"status": "failed", "error": "the request was cancelled"}
        elif done.exception() is not None:
            data = {"status": "failed", "error": str(done.exception())}
        else:
            data = {"status": "saved", **self._saved(done.result())}
        self.events.publish("save", {"id": request, "name": name, **data})


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def _make_handler(server: ControlServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "checkpoint_flow"
        timeout = BODY_TIMEOUT_S

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("control %s: " + format, self.client_address[0], *args)

        def _reply(self, status: int, body: Any, request: str | None = None) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(status)
            if request is not None:
                self.send_header("X-Request-Id", request)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def _guard(self, *, changes: bool) -> None:
            check_host(self.headers, listening_on=server.host)
            if server.token is not None and not tokens_match(
                bearer_token(self.headers), server.token
            ):
                raise HttpError(
                    401,
                    f"this endpoint listens on {server.host}: send its token as "
                    "'Authorization: Bearer <token>' (server.token, or the token in the "
                    "location's control file)",
                )
            if changes:
                check_same_origin(self.headers)

        def do_GET(self) -> None:
            route = self.path.split("?", 1)[0]
            try:
                self._guard(changes=False)
                if route in LIST_ROUTES:
                    self._reply(200, server.listing())
                elif route == "/status":
                    self._reply(200, server.status())
                elif route == "/events":
                    self._events()
                else:
                    raise HttpError(
                        404, f"no route GET {route}; try GET /checkpoints, /status or /events"
                    )
            except HttpError as exc:
                self._reply(exc.status, {"error": exc.message})

        def do_POST(self) -> None:
            route = self.path.split("?", 1)[0]
            try:
                if route not in SAVE_ROUTES:
                    raise HttpError(404, f"no route POST {route}; try POST /save")
                self._guard(changes=True)
                body = json_object(
                    read_body(self.rfile, self.headers, limit=_MAX_BODY), fields=SAVE_FIELDS
                )
                status, reply, request = server.save(body)
            except HttpError as exc:
                # What is left of a refused body cannot be told from a next request.
                self.close_connection = True
                self._reply(exc.status, {"error": exc.message})
                return
            self._reply(status, reply, request)

        def _events(self) -> None:
            last = (self.headers.get("Last-Event-ID") or "").strip()
            after = int(last) if last.isdigit() else None
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            stream = server.events.subscribe(after, heartbeat_s=HEARTBEAT_S)
            try:
                self.wfile.write(b"retry: 2000\n\n")
                self.wfile.flush()
                for event in stream:
                    self.wfile.write(b": keep-alive\n\n" if event is None else event.wire())
                    self.wfile.flush()
            except OSError:  # the client left
                pass
            finally:
                stream.close()

    return Handler
