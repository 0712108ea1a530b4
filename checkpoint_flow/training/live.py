"""Which managers of a location are live: the file naming a running control endpoint.

``CheckpointManager.serve()`` writes ``control.json`` (``<name>.control.json`` for a named
manager) at the location, and stopping the endpoint (or closing the manager, or the process
ending) removes it, so a dashboard reading the location finds the endpoint to send a save
request to. The file is a sealed JSON record (HMAC-signed with a key)::

    {"kind": "checkpoint_flow.training.control", "manager", "url", "token", "pid", "hostname",
     "started_at"}

``token`` is the endpoint's access token when it listens on a host other than loopback:
whoever can read the location can ask for saves. A process killed without warning leaves its
file behind; a reader tells such an endpoint by its not answering, and the next ``serve()``
replaces the file.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from ..errors import CheckpointCorruptError
from ..storage.codec import seal, unseal
from .naming import CONTROL, Naming
from .storage import TrainingStorage

logger = logging.getLogger(__name__)

KIND = "checkpoint_flow.training.control"


@dataclass(frozen=True)
class LiveEndpoint:
    """A registered control endpoint of manager ``manager`` (None: the unnamed one)."""

    manager: str | None
    url: str
    token: str | None
    pid: int
    hostname: str
    started_at: float

    @classmethod
    def here(cls, manager: str | None, url: str, token: str | None) -> LiveEndpoint:
        """An endpoint of this process, started now."""
        return cls(manager, url, token, os.getpid(), socket.gethostname(), time.time())


def register(storage: TrainingStorage, naming: Naming, endpoint: LiveEndpoint) -> None:
    """Write the file naming ``endpoint`` (replacing one a killed process left)."""
    storage.handler.write(naming.control, seal({"kind": KIND, **asdict(endpoint)}, storage.signer))
    logger.info("control endpoint %s registered at %s", endpoint.url, storage.location)


def unregister(storage: TrainingStorage, naming: Naming, url: str) -> None:
    """Remove the file if it still names ``url`` (a later ``serve()`` may have replaced it)."""
    try:
        current = read(storage, naming.control)
    except (OSError, CheckpointCorruptError):
        current = None
    if current is not None and current.url != url:
        return
    try:
        storage.handler.delete(naming.control)
    except OSError as exc:
        logger.warning("could not remove %s at %s: %s", naming.control, storage.location, exc)


def read(storage: TrainingStorage, file: str) -> LiveEndpoint | None:
    """The endpoint a control file names; None if there is no such file. Raises
    CheckpointCorruptError (CheckpointSignatureError with a key) for a damaged or unsigned one."""
    where = f"{file!r} in {storage.location}"
    try:
        data = storage.handler.read(file)
    except FileNotFoundError:
        return None
    body = unseal(bytes(data), storage.signer, where)
    try:
        if body.get("kind") != KIND:
            raise ValueError(f"kind {body.get('kind')!r}")
        token = body.get("token")
        return LiveEndpoint(
            manager=None if body.get("manager") is None else str(body["manager"]),
            url=str(body["url"]),
            token=None if token is None else str(token),
            pid=int(body["pid"]),
            hostname=str(body["hostname"]),
            started_at=float(body["started_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointCorruptError(
            where,
            f"does not name a control endpoint ({exc})",
            "Delete it, or start the manager's serve() again to replace it.",
        ) from exc


def control_files(storage: TrainingStorage, managers: Iterable[str | None]) -> list[str]:
    """The control files at the top of the location, the unnamed manager's first.

    ``managers`` are the names to look for when the handler cannot list one folder (a user's
    handler without ``list_dir``); otherwise every control file is found.
    """
    list_dir: Callable[[str], list[str]] | None = getattr(storage.handler, "list_dir", None)
    if list_dir is not None:
        names = [n for n in list_dir("") if n == CONTROL or n.endswith("." + CONTROL)]
    else:
        candidates = {Naming(m).control for m in (None, *managers)}
        names = [n for n in candidates if storage.handler.exists(n)]
    return sorted(names, key=lambda n: (n != CONTROL, n))


def manager_of(file: str) -> str | None:
    """The manager a control file belongs to (names hold no dot)."""
    return None if file == CONTROL else file.removesuffix("." + CONTROL)
