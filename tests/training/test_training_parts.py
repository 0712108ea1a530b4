"""The parts a CheckpointManager is made of, on their own: its checked options, the metric
tracker and the control endpoint served from plain callables, with no manager behind it."""

from __future__ import annotations

import dataclasses
import http.client
import inspect
import json
import math
from concurrent.futures import Future
from typing import Any

import pytest

from checkpoint_flow import CheckpointManager
from checkpoint_flow.training import keep_last
from checkpoint_flow.training.control import ControlServer, ControlTarget
from checkpoint_flow.training.metrics import MetricTracker
from checkpoint_flow.training.options import Options

STORAGE_ARGUMENTS = {"location", "key", "compress", "handler", "storage_options"}


def manager_defaults() -> dict[str, Any]:
    parameters = inspect.signature(CheckpointManager.__init__).parameters
    return {
        name: p.default for name, p in parameters.items()
        if name != "self" and name not in STORAGE_ARGUMENTS
    }


def test_options_take_every_argument_but_the_storage_ones_and_are_frozen() -> None:
    options = Options.check(**manager_defaults())
    assert options.name is None and options.mode == "min" and options.read_only is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.monitor = "loss"  # type: ignore[misc]
    with pytest.raises(TypeError):
        options.metadata["lr"] = 0.1  # type: ignore[index]


def test_options_report_the_first_bad_argument_in_the_manager_s_order() -> None:
    arguments = {**manager_defaults(), "mode": "median", "monitor": 3, "keep": keep_last(1),
                 "keep_last_n": 2}
    with pytest.raises(ValueError, match="mode='median' is not valid; valid choices: 'min', 'max'"):
        Options.check(**arguments)
    arguments["mode"] = "max"
    with pytest.raises(TypeError, match="monitor must be a metric name"):
        Options.check(**arguments)
    arguments["monitor"] = "score"
    with pytest.raises(ValueError, match=r"keep=keep_last\(1\) replaces keep_last_n"):
        Options.check(**arguments)


def test_metric_tracker_improves_strictly_and_round_trips_through_a_header() -> None:
    tracker = MetricTracker("loss", "min")
    assert tracker.update({"loss": 2.0}, (1, None))
    assert not tracker.update({"loss": 2.0}, (2, None))  # a tie keeps the earlier one
    assert not tracker.update({"loss": math.nan}, (3, None))
    assert not tracker.update({"acc": 0.1}, (4, None))
    assert tracker.update({"loss": 1.5}, (5, 50))
    with pytest.raises(ValueError, match="monitor 'loss' is missing from metrics; they hold: acc"):
        tracker.require({"acc": 0.1})
    again = MetricTracker("loss", "min")
    again.restore(tracker.header())
    assert (again.best, again.best_at) == (1.5, (5, 50))
    assert MetricTracker(None, "max").header() is None


def test_control_server_serves_callables_and_reports_its_stop_once() -> None:
    asked: list[str | None] = []

    def request_save(name: str | None) -> Future[str]:
        asked.append(name)
        future: Future[str] = Future()
        future.set_result(f"{name}.ckpt")
        return future

    target = ControlTarget(
        name="learner", location="memory://run", metadata={"lr": 0.1},
        position=lambda: (2, 20), checkpoints=list, latest=lambda: None,
        checkpoint_info=lambda file: None, request_save=request_save,
    )
    stopped: list[ControlServer] = []
    server = ControlServer(target, on_stop=stopped.append)
    try:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        conn.request("GET", "/status")
        status = json.loads(conn.getresponse().read())
        conn.request("POST", "/save", body=json.dumps({"name": "a"}))
        saved = json.loads(conn.getresponse().read())
        conn.close()
    finally:
        server.stop()
        server.stop()
    assert status == {"manager": "learner", "epoch": 2, "step": 20, "location": "memory://run"}
    assert (saved, asked, stopped) == ({"file": "a.ckpt"}, ["a"], [server])
