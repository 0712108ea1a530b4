"""The dashboard's server and JSON API, driven as its page and as a hostile page would drive it:
every route, bad input, missing tokens, requests from other sites, and the promise that looking
never writes."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from checkpoint_flow import CheckpointFlow, CheckpointManager
from checkpoint_flow.ui import Dashboard
from tests.support.models import ListModel as Model


def failed_flow(location: Path, key: str | None = None, fixed: dict | None = None
                ) -> CheckpointFlow:
    """A three-step flow whose second step failed: the next run resumes at 'fit'. Setting
    ``fixed["fit"]`` makes the step work in later runs."""
    cp = CheckpointFlow(location, key=key)
    fixed = {} if fixed is None else fixed

    @cp.add_step(name="prepare")
    def prepare(state: dict, data: dict) -> None:
        state["numbers"] = list(range(10))

    @cp.add_step(name="fit")
    def fit(state: dict, data: dict) -> None:
        if not fixed.get("fit"):
            raise RuntimeError("the fit diverged")
        state["model"] = sum(state["numbers"])

    @cp.add_step(name="report")
    def report(state: dict, data: dict) -> None:
        state["report"] = "done"

    with pytest.raises(RuntimeError):
        cp.run({})
    return cp


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


class Client:
    """What the dashboard's page does: read the session, then send changes with its token."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.port = dashboard.port
        self.csrf = self.get("/api/session")[1]["csrf"]

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        raw = reply.read()
        conn.close()
        kind = reply.getheader("Content-Type") or ""
        return reply.status, json.loads(raw) if "json" in kind and raw else raw, reply

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        return self.request("GET", path, None, headers)[:2]

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None,
             csrf: bool = True) -> tuple[int, Any]:
        sent = {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{self.port}",
                "Host": f"127.0.0.1:{self.port}"}
        if csrf:
            sent["X-CSRF-Token"] = self.csrf
        sent.update(headers or {})
        data = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
        return self.request("POST", path, data, sent)[:2]


@pytest.fixture
def flow_site(tmp_path: Path) -> Iterator[tuple[Path, Dashboard, Client]]:
    location = tmp_path / "flow"
    failed_flow(location)
    with Dashboard([str(location)]) as dashboard:
        yield location, dashboard, Client(dashboard)


# ------------------------------------------------------------------ the page and the session


def test_the_page_is_served_with_its_script_and_style_and_nothing_from_elsewhere(flow_site):
    _location, dashboard, client = flow_site
    status, page, reply = client.request("GET", "/")
    assert status == 200 and b"<title>checkpoint_flow dashboard</title>" in page
    assert "default-src 'self'" in reply.getheader("Content-Security-Policy")
    assert reply.getheader("X-Frame-Options") == "DENY"
    for asset in (b"/static/dashboard.js", b"/static/dashboard.css"):
        assert asset in page
        assert client.request("GET", asset.decode())[0] == 200
    assert not re.search(rb"(src|href)=[\"']?(https?:)?//", page)  # nothing from elsewhere
    script = client.request("GET", "/static/dashboard.js")[1]
    assert b"innerHTML" not in script and b"https://" not in script
    assert re.findall(rb"https?://[^\"]*", script) == [b"http://www.w3.org/2000/svg"]
    assert client.get("/static/../../etc/passwd")[0] == 404
    assert client.get("/static/index.html")[0] == 404
    status, session = client.get("/api/session")
    assert status == 200 and len(session["csrf"]) >= 32
    assert session["locations"] == [{"id": 0, "location": str(_location)}]
    assert dashboard.url == f"http://127.0.0.1:{dashboard.port}/"


# ------------------------------------------------------------------ flows


def test_a_failed_run_shows_its_steps_the_resume_point_and_the_run(flow_site):
    location, _dashboard, client = flow_site
    status, view = client.get("/api/locations/0")
    assert status == 200 and view["errors"] == {}
    flow = view["flow"]
    assert flow["resume_at"] == "fit"
    assert [(s["name"], s["status"], s["in_last_run"]) for s in flow["steps"]] == [
        ("prepare", "done", "ran"), ("fit", "failed", "ran"), ("report", "pending", None)]
    assert flow["steps"][1]["error"] == "RuntimeError: the fit diverged"
    assert flow["steps"][0]["bytes_written"] > 0 and flow["steps"][0]["has_after"]
    assert [(r["outcome"], r["failed_step"]) for r in flow["runs"]] == [("failed", "fit")]
    assert view["training"] is None
    status, listing = client.get("/api/locations")
    assert listing[0]["flow"] == {"steps": 3, "resume_at": "fit", "running": False,
                                  "outcome": "failed", "memo": 0}


def test_a_resumed_run_marks_the_steps_it_skipped_and_where_it_resumed(tmp_path):
    fixed: dict = {}
    cp = failed_flow(tmp_path, fixed=fixed)
    fixed["fit"] = True
    cp.run({})
    with Dashboard([str(tmp_path)]) as dashboard:
        flow = Client(dashboard).get("/api/locations/0")[1]["flow"]
    assert [(s["name"], s["status"], s["in_last_run"]) for s in flow["steps"]] == [
        ("prepare", "done", "skipped"), ("fit", "done", "resumed"), ("report", "done", "ran")]
    assert flow["resume_at"] is None
    assert [r["outcome"] for r in flow["runs"]] == ["failed", "succeeded"]


def test_a_run_that_reuses_steps_marks_them_reused_as_the_status_does(tmp_path):
    def flow(version: int) -> CheckpointFlow:
        cp = CheckpointFlow(tmp_path)

        @cp.add_step(name="prepare")
        def prepare(state: dict, data: dict) -> None:
            state["numbers"] = list(range(10))

        @cp.add_step(name="fit")
        def fit(state: dict, data: dict) -> None:
            state["model"] = sum(state["numbers"]) + 0 * version  # new code, same output

        @cp.add_step(name="report")
        def report(state: dict, data: dict) -> None:
            state["report"] = f"model {state['model']}"

        return cp

    flow(1).run({})
    cp = flow(2)
    cp.run({}, reuse=True)
    with Dashboard([str(tmp_path)]) as dashboard:
        steps = Client(dashboard).get("/api/locations/0")[1]["flow"]["steps"]
    marks = [(s["name"], s["in_last_run"]) for s in steps]
    assert marks == [("prepare", "reused"), ("fit", "ran"), ("report", "reused")]
    assert marks == [(s.name, s.in_last_run) for s in cp.status().steps]


def test_the_saved_state_is_a_table_of_keys_types_and_sizes_without_unpickling(flow_site):
    _location, _dashboard, client = flow_site
    status, state = client.get("/api/locations/0/flow/state?step=fit&when=before")
    assert status == 200
    assert [(k["key"], k["type"], k["repr"]) for k in state["keys"]] == [
        ("numbers", "list", None)]
    assert "--unpickle" in state["repr_note"]
    status, after = client.get("/api/locations/0/flow/state?step=prepare&when=after")
    assert status == 200 and [k["key"] for k in after["keys"]] == ["numbers"]


def test_values_are_shown_when_the_user_opts_in_or_the_location_is_signed(tmp_path):
    failed_flow(tmp_path / "plain")
    failed_flow(tmp_path / "signed", key="secret")
    with Dashboard([str(tmp_path / "plain")], unpickle=True) as dashboard:
        keys = Client(dashboard).get("/api/locations/0/flow/state?step=fit")[1]["keys"]
    assert keys[0]["repr"] == repr(list(range(10)))
    with Dashboard([str(tmp_path / "signed")], key="secret") as dashboard:
        state = Client(dashboard).get("/api/locations/0/flow/state?step=fit")[1]
    assert state["keys"][0]["repr"] == repr(list(range(10))) and state["repr_note"] is None


def test_with_a_key_an_unsigned_location_shows_nothing_but_the_refusal(tmp_path):
    failed_flow(tmp_path)
    with Dashboard([str(tmp_path)], key="secret") as dashboard:
        client = Client(dashboard)
        view = client.get("/api/locations/0")[1]
        status, state = client.get("/api/locations/0/flow/state?step=fit")
    assert view["flow"] is None and "sign" in view["errors"]["flow"]
    assert status == 409 and "sign" in state["error"]


@pytest.mark.parametrize(
    "path, status, message",
    [
        ("/api/locations/7", 404, "locations 0 to 0"),
        ("/api/locations/-1", 404, "no location '-1'"),
        ("/api/locations/..%2F..%2Fetc%2Fpasswd", 404, "no location"),
        ("/api/locations/0/../../../etc/passwd", 404, "no route"),
        ("/api/locations/0/flow/state?step=nope", 404, "steps: prepare, fit, report"),
        ("/api/locations/0/flow/state?step=../../etc/passwd", 404, "no step"),
        ("/api/locations/0/flow/state?step=report", 404, "not run yet"),
        ("/api/locations/0/flow/state?step=fit&when=sideways", 400, "'before' or 'after'"),
        ("/api/locations/0/flow/state", 400, "name the step"),
        ("/api/nothing", 404, "no route"),
        ("/api/locations/0/flow/rewind", 405, "answers POST"),
    ],
)
def test_bad_requests_name_what_is_wrong(flow_site, path, status, message):
    _location, _dashboard, client = flow_site
    got, reply = client.get(path)
    assert got == status and message in reply["error"], reply


def test_rewind_reset_and_gc_change_the_location_as_the_command_line_does(flow_site):
    location, _dashboard, client = flow_site
    assert client.post("/api/locations/0/flow/rewind", {"step": "prepare"}) == (
        200, {"resume_at": "prepare", "position": 0, "steps": 3})
    assert CheckpointFlow(location).status().resume_at == "prepare"
    assert client.post("/api/locations/0/flow/reset") == (
        200, {"resume_at": None, "was_resume_at": "prepare"})
    assert CheckpointFlow(location).status().resume_at is None
    status, collected = client.post("/api/locations/0/flow/gc")
    assert status == 200 and set(collected) == {"records_deleted", "blobs_deleted"}
    status, result = client.post("/api/locations/0/verify")
    assert (status, result) == (200, {"flow": {"ok": True, "problems": []}, "training": None})


def test_changes_while_a_run_holds_the_location_are_refused_saying_so(flow_site):
    location, _dashboard, client = flow_site
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from checkpoint_flow import CheckpointFlow; "
         "from checkpoint_flow.storage.locks import run_lock; "
         f"lock = run_lock(CheckpointFlow({str(location)!r}).handler); lock.acquire(); "
         "print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree(location)
        for action in ("reset", "gc"):
            status, reply = client.post(f"/api/locations/0/flow/{action}")
            assert status == 409 and "try again when it ends" in reply["error"], reply
        assert client.post("/api/locations/0/flow/rewind", {"step": "prepare"})[0] == 409
        assert tree(location) == before
    finally:
        holder.communicate("", timeout=60)


def test_verify_names_the_damage_and_changes_nothing(flow_site):
    location, _dashboard, client = flow_site
    record = sorted((location / "records").iterdir())[-1]
    data = bytearray(record.read_bytes())
    data[len(data) // 2] ^= 0x01
    record.write_bytes(bytes(data))
    before = tree(location)
    status, result = client.post("/api/locations/0/verify")
    assert status == 200 and not result["flow"]["ok"]
    assert any(record.name in p for p in result["flow"]["problems"]), result
    assert tree(location) == before
    view = client.get("/api/locations/0")[1]
    assert view["flow"] is None and record.name in view["errors"]["flow"]


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"step": "../../etc/passwd"}, 404, "no step"),
        ({"step": 3}, 400, "must be a step name"),
        ({"stp": "fit"}, 400, "unknown field 'stp'"),
        (b"{not json", 400, "not JSON"),
        (b"[]", 400, "JSON object"),
        ({"step": "report"}, 409, "never run"),
        pytest.param(b"x" * (64 * 1024 + 1), 413, "larger than", id="oversized"),
    ],
)
def test_bad_bodies_change_nothing(flow_site, body, status, message):
    location, _dashboard, client = flow_site
    before = tree(location)
    got, reply = client.post("/api/locations/0/flow/rewind", body)
    assert got == status and message in reply["error"], reply
    assert tree(location) == before


@pytest.mark.parametrize(
    "headers, csrf, status, message",
    [
        ({}, False, 403, "X-CSRF-Token"),
        ({"X-CSRF-Token": "guessed"}, False, 403, "X-CSRF-Token"),
        ({"Origin": "http://evil.example"}, True, 403, "origin 'http://evil.example'"),
        ({"Sec-Fetch-Site": "cross-site"}, True, 403, "another site"),
        ({"Content-Type": "text/plain"}, True, 415, "application/json"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, True, 415, "application/json"),
        ({"Host": "evil.example", "Origin": "http://evil.example"}, True, 403, "loopback"),
    ],
)
def test_changes_from_anywhere_but_the_page_are_refused(flow_site, headers, csrf, status,
                                                        message):
    location, _dashboard, client = flow_site
    before = tree(location)
    got, reply = client.post("/api/locations/0/flow/reset", {}, headers, csrf=csrf)
    assert got == status and message in reply["error"], reply
    assert tree(location) == before
    assert CheckpointFlow(location).status().resume_at == "fit"


def test_looking_never_writes_and_a_missing_location_is_not_created(tmp_path):
    location = tmp_path / "flow"
    failed_flow(location)
    missing = tmp_path / "not-yet"
    before = tree(tmp_path)
    with Dashboard([str(location), str(missing)]) as dashboard:
        client = Client(dashboard)
        for path in ("/", "/api/locations", "/api/locations/0", "/api/locations/1",
                     "/api/locations/0/flow/state?step=fit", "/api/session"):
            assert client.get(path)[0] == 200, path
        view = client.get("/api/locations/1")[1]
    assert view["missing"] and view["flow"] is None and view["training"] is None
    assert not missing.exists()
    assert tree(tmp_path) == before


def test_a_location_that_cannot_be_opened_is_refused_at_start(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(ValueError, match="a-file"):
        Dashboard([str(tmp_path / "a-file")])
    with pytest.raises(ValueError, match="port"):
        Dashboard([str(tmp_path)], port=70000)


# ------------------------------------------------------------------ tokens off loopback


def test_off_loopback_every_request_needs_the_token_once_then_the_cookie(tmp_path):
    failed_flow(tmp_path)
    with Dashboard([str(tmp_path)], host="0.0.0.0") as dashboard:
        token = dashboard.guard.token
        assert token and dashboard.url.endswith(f"?token={token}")
        conn = lambda: http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=30)  # noqa: E731

        def get(path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
            c = conn()
            c.request("GET", path, headers=headers or {})
            reply = c.getresponse()
            reply.read()
            c.close()
            return reply

        assert get("/").status == 401
        assert get("/api/session").status == 401
        assert get("/?token=wrong").status == 401
        first = get(f"/?token={token}")
        assert first.status == 303 and first.getheader("Location") == "/"
        cookie = first.getheader("Set-Cookie")
        assert f"={token}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        jar = cookie.split(";", 1)[0]
        assert get("/api/session", {"Cookie": jar}).status == 200
        assert get("/api/session", {"Cookie": jar.split("=")[0] + "=nope"}).status == 401
        assert get("/api/session", {"Authorization": f"Bearer {token}"}).status == 200


def test_on_loopback_a_page_of_another_site_cannot_read_by_rebinding_its_name(flow_site):
    _location, _dashboard, client = flow_site
    status, reply = client.get("/api/locations/0", {"Host": "evil.example:80"})
    assert status == 403 and "loopback" in reply["error"]
    assert client.get("/api/locations/0", {"Host": "localhost"})[0] == 200


# ------------------------------------------------------------------ memoized calls


def test_memoized_calls_are_listed(tmp_path):
    cp = CheckpointFlow(tmp_path)

    @cp.cached(key="square")
    def square(x: int) -> int:
        return x * x

    assert square(4) == 16
    with Dashboard([str(tmp_path)]) as dashboard:
        memo = Client(dashboard).get("/api/locations/0")[1]["flow"]["memo"]
    assert len(memo) == 1 and memo[0]["key"].startswith("square") and memo[0]["size"] > 0


# ------------------------------------------------------------------ training


def trained(location: Path, losses: list[float], **options: Any) -> CheckpointManager:
    ckpt = CheckpointManager(location, monitor="loss", **options)
    model = Model()
    for epoch, loss in enumerate(losses, 1):
        ckpt.on_epoch_end(epoch, {"loss": loss}, model=model)
    ckpt.wait()
    return ckpt


def test_training_checkpoints_come_with_roles_metric_history_and_metadata(tmp_path):
    ckpt = trained(tmp_path, [0.9, 0.5, 0.7, 0.4, 0.6], keep_last_n=2, metadata={"lr": 3e-4})
    ckpt.close()
    with Dashboard([str(tmp_path)]) as dashboard:
        view = Client(dashboard).get("/api/locations/0")[1]
    assert view["flow"] is None
    (manager,) = view["training"]["managers"]
    assert (manager["latest"], manager["best"]) == ("checkpoint_epoch_0005.ckpt",
                                                     "checkpoint_epoch_0004.ckpt")
    assert manager["monitor"] == "loss" and manager["metadata"] == {"lr": 3e-4}
    # The curve covers every epoch, also those whose checkpoint retention removed.
    assert [(h["epoch"], h["metrics"]["loss"]) for h in manager["history"]] == [
        (1, 0.9), (2, 0.5), (3, 0.7), (4, 0.4), (5, 0.6)]
    roles = {c["file"]: (c["role"], c["latest"], c["best"]) for c in manager["checkpoints"]}
    assert roles == {
        "checkpoint_epoch_0004.ckpt": ("rolling", False, True),
        "checkpoint_epoch_0005.ckpt": ("rolling", True, False),
        "best_model_loss.ckpt": ("best", False, False),
    }
    assert manager["live"] is None


def test_nan_metrics_reach_the_page_as_null(tmp_path):
    trained(tmp_path, [0.5, float("nan")]).close()
    with Dashboard([str(tmp_path)]) as dashboard:
        status, view = Client(dashboard).get("/api/locations/0")
    history = view["training"]["managers"][0]["history"]
    assert status == 200 and [h["metrics"]["loss"] for h in history] == [0.5, None]


def save_through_dashboard(client: Client, ckpt: CheckpointManager, body: dict,
                           steps: list[int]) -> tuple[int, Any]:
    """POST a save to the dashboard while the training loop keeps stepping."""
    replies: list[tuple[int, Any]] = []
    sender = threading.Thread(
        target=lambda: replies.append(client.post("/api/locations/0/training/save", body))
    )
    sender.start()
    model = Model()
    while sender.is_alive() and len(steps) < 100_000:
        steps.append(len(steps) + 1)
        ckpt.on_step_end(steps[-1], epoch=2, model=model)
        sender.join(0.001)
    sender.join()
    ckpt.wait()
    return replies[0]


def test_a_live_run_is_found_and_saves_from_the_dashboard_while_it_steps(tmp_path):
    ckpt = trained(tmp_path, [0.9], every_n_epochs=None)
    ckpt.serve()
    with Dashboard([str(tmp_path)]) as dashboard:
        client = Client(dashboard)
        manager = client.get("/api/locations/0")[1]["training"]["managers"][0]
        assert manager["live"]["reachable"] and manager["live"]["epoch"] == 1
        steps: list[int] = []
        status, reply = save_through_dashboard(
            client, ckpt, {"manager": None, "name": "checkpoint epoch 2"}, steps)
        assert status == 200, reply
        assert reply["file"] == "checkpoint_epoch_2.ckpt" and reply["epoch"] == 2
        assert reply["step"] == ckpt.checkpoint_info(reply["file"]).step
        assert len(reply["id"]) == 12 and reply["location"] == str(tmp_path)
        assert (tmp_path / "checkpoint_epoch_2.ckpt").is_file()
        status, again = save_through_dashboard(
            client, ckpt, {"manager": None, "name": "checkpoint_epoch_2"}, steps)
        assert status == 409 and "exists" in again["error"]
        for body, message in (({"name": "../../etc/passwd"}, "invalid checkpoint name"),
                              ({"name": ""}, "must be a checkpoint name"),
                              ({"manager": 3, "name": "x"}, "manager name or null"),
                              ({"manager": "nobody", "name": "x"}, "not live")):
            status, refused = client.post("/api/locations/0/training/save", body)
            assert status in (400, 404) and message in refused["error"], refused
    ckpt.close()
    assert not (tmp_path / "control.json").exists()


def test_a_save_without_a_live_run_says_how_to_make_one(tmp_path):
    trained(tmp_path, [0.9]).close()
    with Dashboard([str(tmp_path)]) as dashboard:
        status, reply = Client(dashboard).post(
            "/api/locations/0/training/save", {"manager": None, "name": "x"})
    assert status == 404 and "ckpt.serve()" in reply["error"]


def test_a_run_that_died_without_closing_is_shown_as_not_answering(tmp_path):
    ckpt = trained(tmp_path, [0.9])
    server = ckpt.serve()
    control = (tmp_path / "control.json").read_bytes()
    ckpt.close()
    (tmp_path / "control.json").write_bytes(control)  # what a killed process leaves
    with Dashboard([str(tmp_path)]) as dashboard:
        client = Client(dashboard)
        live = client.get("/api/locations/0")[1]["training"]["managers"][0]["live"]
        status, reply = client.post("/api/locations/0/training/save", {"name": "x"})
    assert live["reachable"] is False and server.url in live["error"]
    assert status == 502 and "nothing was saved" in reply["error"]


def test_save_events_are_relayed_to_the_page(tmp_path):
    ckpt = trained(tmp_path, [0.9], every_n_epochs=None)
    server = ckpt.serve()
    with Dashboard([str(tmp_path)]) as dashboard:
        client = Client(dashboard)
        conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=60)
        conn.request("GET", "/api/locations/0/training/events?manager=")
        stream = conn.getresponse()
        assert stream.status == 200
        assert stream.getheader("Content-Type") == "text/event-stream"
        while not server.events._subscribers:  # the relay is connected upstream
            threading.Event().wait(0.01)
        status, reply = save_through_dashboard(client, ckpt, {"name": "relayed"}, [])
        events = []
        while len(events) < 2:
            line = stream.fp.readline().decode()
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
        conn.close()
    assert status == 200
    assert [(e["status"], e["id"]) for e in events] == [("requested", reply["id"]),
                                                         ("saved", reply["id"])]
    assert events[1]["file"] == "relayed.ckpt" and events[1]["epoch"] == 2
    ckpt.close()


def test_locations_on_object_storage_are_read_through_the_storage_options(s3):
    _fs, bucket, options = s3
    flow_url, run_url = f"s3://{bucket}/flow", f"s3://{bucket}/run"
    cp = CheckpointFlow(flow_url, storage_options=options)
    cp.add_step(name="one")(lambda state, data: state.update(x=1))
    cp.run({})
    ckpt = CheckpointManager(run_url, storage_options=options, monitor="loss")
    ckpt.on_epoch_end(1, {"loss": 0.5}, model=Model())
    server = ckpt.serve()
    try:
        with Dashboard([flow_url, run_url], storage_options=options) as dashboard:
            client = Client(dashboard)
            flow = client.get("/api/locations/0")[1]["flow"]
            (manager,) = client.get("/api/locations/1")[1]["training"]["managers"]
    finally:
        ckpt.close()
    assert [(s["name"], s["status"]) for s in flow["steps"]] == [("one", "done")]
    assert manager["latest"] == "checkpoint_epoch_0001.ckpt"
    assert manager["history"][0]["metrics"] == {"loss": 0.5}
    assert manager["live"]["url"] == server.url and manager["live"]["reachable"]


# ------------------------------------------------------------------ the command


def test_the_command_prints_its_url_serves_and_stops_on_ctrl_c(tmp_path):
    failed_flow(tmp_path / "flow")
    proc = subprocess.Popen(
        [sys.executable, "-m", "checkpoint_flow", "ui", str(tmp_path / "flow"), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "dashboard of 1 location(s) at http://127.0.0.1:" in line, line
        url = line.split(" at ", 1)[1].strip()
        port = urllib.parse.urlsplit(url).port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/locations/0")
        assert json.loads(conn.getresponse().read())["flow"]["resume_at"] == "fit"
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_the_command_refuses_bad_usage(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "checkpoint_flow", "ui", *args],
                              capture_output=True, text=True, timeout=60)

    done = run(str(tmp_path), "--storage-option", "anon=true")
    assert done.returncode == 2 and "--storage-option applies to URL locations" in done.stderr
    (tmp_path / "file").write_text("x")
    done = run(str(tmp_path / "file"))
    assert done.returncode == 1 and "file" in done.stderr and "Traceback" not in done.stderr
    assert run().returncode == 2


def test_open_shows_the_dashboard_in_a_browser(tmp_path, monkeypatch, capsys):
    import webbrowser

    from checkpoint_flow import cli
    from checkpoint_flow.ui import server

    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", opened.append)
    monkeypatch.setattr(server.Dashboard, "serve_forever", lambda self: None)
    assert cli.main(["ui", str(tmp_path), "--open"]) == 0
    assert opened and opened[0].startswith("http://127.0.0.1:")
    assert opened[0] in capsys.readouterr().out


def test_off_loopback_the_command_prints_the_token_url(tmp_path, monkeypatch, capsys):
    from checkpoint_flow import cli
    from checkpoint_flow.ui import server

    monkeypatch.setattr(server.Dashboard, "serve_forever", lambda self: None)
    assert cli.main(["ui", str(tmp_path), "--host", "0.0.0.0"]) == 0
    out = capsys.readouterr().out
    assert "?token=" in out and "keep it private" in out


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX only")
def test_a_port_in_use_is_an_error_naming_it(tmp_path):
    with Dashboard([str(tmp_path)]) as dashboard:
        done = subprocess.run(
            [sys.executable, "-m", "checkpoint_flow", "ui", str(tmp_path), "--port",
             str(dashboard.port)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and f"cannot listen on 127.0.0.1:{dashboard.port}" in done.stderr
