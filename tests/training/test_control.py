"""The training control endpoint (``ckpt.serve()``) driven as the users of a training web app
drove theirs: names with spaces, the suggested default name, a name saved twice, broken
requests, pages of other sites, and the events a page shows its toasts from."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from checkpoint_flow import CheckpointExistsError, CheckpointManager, CheckpointSignatureError
from checkpoint_flow.training import live
from checkpoint_flow.training.naming import Naming, sanitize_name
from tests.support.models import ListModel as Model


def request(
    url: str,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, http.client.HTTPResponse]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    conn.request(method, path, body=data, headers=headers or {})
    reply = conn.getresponse()
    raw = reply.read()
    conn.close()
    return reply.status, json.loads(raw) if raw else None, reply


def save_while_stepping(
    ckpt: CheckpointManager, url: str, body: dict[str, Any] | None, model: Model,
    path: str = "/save",
) -> tuple[int, Any, list[int]]:
    """POST a save from another thread while the loop keeps stepping; the reply and the steps."""
    replies: list[tuple[int, Any]] = []

    def client() -> None:
        status, answer, _ = request(url, "POST", path, body)
        replies.append((status, answer))

    thread = threading.Thread(target=client)
    thread.start()
    steps = []
    step = 0
    while thread.is_alive() and step < 100_000:
        step += 1
        ckpt.on_step_end(step, epoch=3, model=model)
        steps.append(step)
        thread.join(0.001)
    thread.join()
    ckpt.wait()
    return replies[0][0], replies[0][1], steps


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[CheckpointManager, Any]]:
    ckpt = CheckpointManager(tmp_path / "run", every_n_epochs=None, metadata={"lr": 0.1})
    server = ckpt.serve()
    yield ckpt, server
    ckpt.close()


def nothing_saved_after_stepping(ckpt: CheckpointManager) -> bool:
    model = Model()
    for step in range(1, 4):
        ckpt.on_step_end(step, epoch=1, model=model)
    ckpt.wait()
    return ckpt.checkpoints() == []


# ------------------------------------------------------------------ names


def test_names_with_spaces_become_underscores_and_the_suggested_default_is_accepted(served):
    ckpt, server = served
    status, reply, _ = save_while_stepping(ckpt, server.url, {"name": "before lr drop"}, Model())
    assert (status, reply) == (200, {"file": "before_lr_drop.ckpt"})
    status, reply, _ = save_while_stepping(
        ckpt, server.url, {"name": "checkpoint_epoch_42"}, Model(), path="/save_checkpoint"
    )
    assert (status, reply) == (200, {"file": "checkpoint_epoch_42.ckpt"})
    assert (Path(ckpt.location) / "checkpoint_epoch_42.ckpt").is_file()


def test_sanitize_name_keeps_the_names_of_periodic_saves_for_the_manager():
    assert sanitize_name("  my run 2 ") == "my_run_2.ckpt"
    assert sanitize_name("checkpoint_epoch_7") == "checkpoint_epoch_7.ckpt"
    for taken in ("checkpoint_epoch_0007", "checkpoint_step_00001200", "latest",
                  "checkpoint_epoch_0001_step_00000005", "best_model_loss", "emergency_x"):
        with pytest.raises(ValueError, match="manager's own files"):
            sanitize_name(taken)
    for bad in ("../../etc/passwd", "a/b", "tab\there", "dot.ted", "", "x" * 101):
        with pytest.raises(ValueError, match="letters, digits, spaces"):
            sanitize_name(bad)


def test_a_name_saved_already_is_refused_with_409_and_the_file_is_untouched(served):
    ckpt, server = served
    model = Model()
    model.w = [1.0]
    ckpt.save(name="keep me", model=model, epoch=1)
    ckpt.wait()
    file = Path(ckpt.location) / "keep_me.ckpt"
    before = file.read_bytes()
    model.w = [2.0]
    status, reply, _ = save_while_stepping(ckpt, server.url, {"name": "keep_me"}, model)
    assert status == 409
    assert "keep_me.ckpt" in reply["error"] and "choose another name" in reply["error"]
    assert file.read_bytes() == before
    assert [c.file for c in ckpt.checkpoints()] == ["keep_me.ckpt"]


def test_two_requests_for_one_name_save_once(served):
    ckpt, server = served
    first = ckpt.request_save("twice", replace=False)
    status, reply, _ = request(server.url, "POST", "/save", {"name": "twice"})
    assert status == 409 and "already waiting" in reply["error"]
    ckpt.on_step_end(1, epoch=1, model=Model())
    assert first.result(30) == "twice.ckpt"


def test_a_name_committed_before_the_boundary_fails_the_request_and_training_goes_on(tmp_path):
    ckpt = CheckpointManager(tmp_path, every_n_epochs=None, async_save=False)
    model = Model()
    future = ckpt.request_save("clash", replace=False)
    ckpt.save(name="clash", model=model, epoch=1)
    original = (tmp_path / "clash.ckpt").read_bytes()
    ckpt.on_step_end(1, epoch=1, model=model)  # does not raise: the request fails alone
    with pytest.raises(CheckpointExistsError, match="clash.ckpt"):
        future.result(5)
    assert (tmp_path / "clash.ckpt").read_bytes() == original
    with pytest.raises(CheckpointExistsError):
        ckpt.request_save("clash", replace=False)
    # The Python API keeps its meaning: a named save replaces its file unless told otherwise.
    model.w = [5.0]
    replaced = ckpt.request_save("clash")
    ckpt.on_step_end(2, epoch=1, model=model)
    assert replaced.result(5) == "clash.ckpt"
    assert (tmp_path / "clash.ckpt").read_bytes() != original
    ckpt.close()


# ------------------------------------------------------------------ broken requests


@pytest.mark.parametrize("length", ["abc", "-1", "1e3", " ", "12, 12"])
def test_a_bad_content_length_is_a_400_and_nothing_is_saved(served, length):
    ckpt, server = served
    status, reply, _ = request(
        server.url, "POST", "/save", b'{"name": "x"}', {"Content-Length": length}
    )
    assert status == 400, reply
    assert "Content-Length" in reply["error"]
    assert nothing_saved_after_stepping(ckpt)


def test_a_body_shorter_than_announced_is_a_400_and_nothing_is_saved(served):
    ckpt, server = served
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        body = b'{"name": "x"}'
        sock.sendall(
            b"POST /save HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + body
        )
        sock.shutdown(socket.SHUT_WR)  # the client gives up
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer
    assert b"ended after 13 of the 100 bytes" in answer
    assert nothing_saved_after_stepping(ckpt)


def test_a_body_that_stalls_is_refused_when_the_socket_times_out(served, monkeypatch):
    from checkpoint_flow.training import control

    ckpt, server = served
    monkeypatch.setattr(server._httpd.RequestHandlerClass, "timeout", 0.5)
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /save HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50\r\n\r\n{")
        answer = b""  # the client keeps its side open and sends no more
        while chunk := sock.recv(4096):
            answer += chunk
    assert b" 400 " in answer.split(b"\r\n")[0] and b"ended after 1 of the 50" in answer
    assert control.BODY_TIMEOUT_S > 0.5  # the default leaves slow clients time
    assert nothing_saved_after_stepping(ckpt)


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"nam": "typo"}, 400, "unknown field 'nam'"),
        (b"{not json", 400, "not JSON"),
        (b'["name"]', 400, "JSON object"),
        ({"name": 42}, 400, "must be a string"),
        ({"name": "../../etc/passwd"}, 400, "invalid checkpoint name"),
        ({"name": "bad name!"}, 400, "invalid checkpoint name"),
        pytest.param(b"x" * (64 * 1024 + 1), 413, "larger than", id="oversized"),
    ],
)
def test_bad_bodies_are_refused_and_nothing_is_saved(served, body, status, message):
    ckpt, server = served
    got, reply, _ = request(server.url, "POST", "/save", body)
    assert got == status and message in reply["error"], reply
    assert nothing_saved_after_stepping(ckpt)
    assert not (Path(ckpt.location).parent.parent / "etc").exists()


def test_unknown_routes_are_404(served):
    _ckpt, server = served
    assert request(server.url, "GET", "/nothing")[0] == 404
    assert request(server.url, "POST", "/checkpoints", {})[0] == 404


# ------------------------------------------------------------------ pages of other sites


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_a_save_posted_by_a_page_of_another_site_is_refused(served, headers):
    ckpt, server = served
    status, reply, _ = request(server.url, "POST", "/save", {"name": "csrf"}, headers)
    assert status == 403 and "refused" in reply["error"]
    assert nothing_saved_after_stepping(ckpt)


def test_a_save_posted_by_a_page_of_the_endpoint_itself_passes(served):
    ckpt, server = served
    headers = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    replies: list[int] = []
    client = threading.Thread(
        target=lambda: replies.append(request(server.url, "POST", "/save", {"name": "own"},
                                              headers)[0])
    )
    client.start()
    step = 0
    while client.is_alive() and step < 100_000:
        step += 1
        ckpt.on_step_end(step, epoch=1, model=Model())
        client.join(0.001)
    assert replies == [200]


def test_a_page_that_rebinds_its_name_to_loopback_is_refused(served):
    ckpt, server = served
    headers = {"Host": f"evil.example:{server.port}", "Origin": f"http://evil.example:{server.port}"}
    assert request(server.url, "POST", "/save", {"name": "x"}, headers)[0] == 403
    assert request(server.url, "GET", "/checkpoints", None, headers)[0] == 403
    assert nothing_saved_after_stepping(ckpt)


def test_off_loopback_every_request_needs_the_token(tmp_path):
    ckpt = CheckpointManager(tmp_path, every_n_epochs=None)
    server = ckpt.serve(host="0.0.0.0")
    try:
        assert server.token
        url = f"http://127.0.0.1:{server.port}"
        status, reply, _ = request(url, "GET", "/checkpoints")
        assert status == 401 and "Authorization: Bearer" in reply["error"]
        wrong = {"Authorization": "Bearer not-the-token"}
        assert request(url, "POST", "/save", {"name": "x"}, wrong)[0] == 401
        good = {"Authorization": f"Bearer {server.token}"}
        assert request(url, "GET", "/checkpoints", None, good)[:2] == (200, [])
        registered = live.read(ckpt._storage, Naming().control)
        assert registered is not None and registered.token == server.token
    finally:
        ckpt.close()
    assert nothing_saved_after_stepping(CheckpointManager(tmp_path, every_n_epochs=None))


# ------------------------------------------------------------------ listing, status, events


def test_checkpoints_list_info_metadata_latest_and_best(tmp_path):
    ckpt = CheckpointManager(tmp_path, monitor="loss", metadata={"lr": 0.1})
    model = Model()
    ckpt.on_epoch_end(1, {"loss": 0.5}, model=model)
    ckpt.save(name="probe", info={"note": "by hand"}, model=model)
    ckpt.on_epoch_end(2, {"loss": 0.7}, model=model)
    with ckpt.serve() as server:
        status, listing, _ = request(server.url, "GET", "/checkpoints")
        assert status == 200
        assert request(server.url, "GET", "/list_checkpoints")[1] == listing
        status, state, _ = request(server.url, "GET", "/status")
    by_file = {c["file"]: c for c in listing}
    assert by_file["probe.ckpt"]["info"] == {"note": "by hand"}
    assert all(c["metadata"] == {"lr": 0.1} for c in listing)
    assert [f for f, c in by_file.items() if c["latest"]] == ["checkpoint_epoch_0002.ckpt"]
    assert [f for f, c in by_file.items() if c["best"]] == ["checkpoint_epoch_0001.ckpt"]
    assert state == {"manager": None, "epoch": 2, "step": None, "location": ckpt.location}
    ckpt.close()


def read_events(url: str, count: int, headers: dict[str, str] | None = None) -> list[dict]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("GET", "/events", headers=headers or {})
    reply = conn.getresponse()
    assert reply.status == 200
    assert reply.getheader("Content-Type") == "text/event-stream"
    events: list[dict] = []
    current: dict[str, str] = {}
    heartbeats = 0
    while len(events) < count:
        line = reply.fp.readline().decode().rstrip("\n")
        heartbeats += line.startswith(": keep-alive")
        assert heartbeats < 10, f"no event came; got {events}"
        if line.startswith(("id:", "event:", "data:")):
            key, _, value = line.partition(":")
            current[key] = value.strip()
        elif line == "" and "data" in current:
            events.append({"event_id": int(current["id"]), "event": current["event"],
                           **json.loads(current["data"])})
            current = {}
    conn.close()
    return events


def test_save_events_are_pushed_to_listeners_and_replayed_after_a_reconnect(served):
    ckpt, server = served
    received: list[list[dict]] = []
    listener = threading.Thread(target=lambda: received.append(read_events(server.url, 2)))
    listener.start()
    while not server.events._subscribers:  # the listener is connected
        threading.Event().wait(0.01)
    status, reply, steps = save_while_stepping(ckpt, server.url, {"name": "evented"}, Model())
    listener.join(60)
    requested, saved = received[0]
    assert (requested["status"], requested["name"]) == ("requested", "evented")
    assert saved["status"] == "saved" and saved["file"] == "evented.ckpt"
    assert saved["id"] == requested["id"] and saved["event"] == "save"
    assert (saved["epoch"], saved["step"]) == (3, ckpt.checkpoint_info("evented.ckpt").step)
    assert len(steps) >= 1 and (status, reply) == (200, {"file": "evented.ckpt"})
    replay = read_events(server.url, 1, {"Last-Event-ID": str(requested["event_id"])})
    assert replay[0]["event_id"] == saved["event_id"] and replay[0]["status"] == "saved"


def test_a_failed_save_is_an_event_and_a_500(tmp_path):
    ckpt = CheckpointManager(tmp_path, every_n_epochs=None)
    server = ckpt.serve()
    received: list[list[dict]] = []
    listener = threading.Thread(target=lambda: received.append(read_events(server.url, 2)))
    listener.start()
    while not server.events._subscribers:
        threading.Event().wait(0.01)
    unpicklable = threading.Lock()
    replies: list[tuple[int, Any]] = []
    client = threading.Thread(
        target=lambda: replies.append(request(server.url, "POST", "/save", {"name": "bad"})[:2])
    )
    client.start()
    step = 0
    try:
        while client.is_alive() and step < 100_000:
            step += 1
            ckpt.on_step_end(step, epoch=1, lock=unpicklable)
            client.join(0.001)
    except Exception:  # noqa: BLE001 - the failed background save reaches the loop too
        pass
    client.join(60)
    listener.join(60)
    assert replies[0][0] == 500 and "cannot pickle" in replies[0][1]["error"]
    assert [e["status"] for e in received[0]] == ["requested", "failed"]
    assert received[0][1]["error"] == replies[0][1]["error"]
    assert received[0][1]["id"] == replies[0][1]["id"]
    ckpt.close(raise_errors=False)


# ------------------------------------------------------------------ the control file


def test_serve_names_the_endpoint_at_the_location_until_it_stops(tmp_path):
    ckpt = CheckpointManager(tmp_path, name="learner", every_n_epochs=None)
    server = ckpt.serve()
    files = live.control_files(ckpt._storage, [])
    assert files == ["learner.control.json"] and live.manager_of(files[0]) == "learner"
    endpoint = live.read(ckpt._storage, files[0])
    assert endpoint is not None
    assert (endpoint.manager, endpoint.url, endpoint.token) == ("learner", server.url, None)
    keyed = CheckpointManager(tmp_path, name="learner", key="k", read_only=True)
    with pytest.raises(CheckpointSignatureError):  # with a key, an unsigned file is not trusted
        live.read(keyed._storage, files[0])
    server.stop()
    assert not (tmp_path / "learner.control.json").exists()
    server.stop()
    again = ckpt.serve()
    ckpt.close()
    assert not (tmp_path / "learner.control.json").exists() and again.url
    read_only = CheckpointManager(tmp_path, name="learner", read_only=True)
    with read_only.serve():
        assert not (tmp_path / "learner.control.json").exists()


def test_a_process_that_ends_without_closing_its_manager_removes_its_control_file(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from checkpoint_flow import CheckpointManager; "
        "ckpt = CheckpointManager(sys.argv[1]); server = ckpt.serve(); "
        "import pathlib; assert (pathlib.Path(sys.argv[1]) / 'control.json').exists(); "
        "print(server.url)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("http://127.0.0.1:")
    assert not (tmp_path / "control.json").exists()


def test_a_running_endpoint_keeps_its_manager_and_its_lock(tmp_path):
    import gc

    from checkpoint_flow import CheckpointLockedError

    server = CheckpointManager(tmp_path, every_n_epochs=None).serve()
    gc.collect()
    with pytest.raises(CheckpointLockedError):
        CheckpointManager(tmp_path)
    server.stop()
    del server
    gc.collect()
    CheckpointManager(tmp_path).close()
