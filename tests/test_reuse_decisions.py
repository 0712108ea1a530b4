"""The pure rules: when a step is reused, how inputs are compared, how retries wait."""

from __future__ import annotations

from datetime import timedelta

import pytest

from checkpoint_flow import Retry
from checkpoint_flow.reuse import Decision, RecordedExecution, changed_keys, decide, state_digest

DONE = RecordedExecution(fingerprint="fp", status="done", ran_at=0.0, has_output=True)


def reuse_of(recorded: RecordedExecution | None = DONE, *, fingerprint: str = "fp",
             allowed: bool = True, forced: bool = False, same: bool = True) -> Decision:
    looked: list[bool] = []

    def same_input() -> bool:
        looked.append(True)
        return same

    decision = decide(recorded, fingerprint=fingerprint, allowed=allowed, forced=forced,
                      same_input=same_input)
    # Inputs are compared (which may read storage) only when nothing else rules reuse out.
    assert bool(looked) == (decision.reuse or decision.reason.startswith("its input"))
    return decision


def test_an_unchanged_step_on_the_same_input_is_reused() -> None:
    decision = reuse_of()
    assert decision.reuse
    assert decision.reason.startswith("unchanged since ")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"forced": True}, "the run was asked to start here (checkpoint=)"),
        ({"allowed": False}, "it is registered with reuse=False"),
        ({"recorded": None}, "it has not run here before"),
        ({"recorded": RecordedExecution()}, "it has not run here before"),
        ({"recorded": RecordedExecution("fp", "failed", 0.0, True)},
         "it did not finish when it last ran"),
        ({"fingerprint": "other"}, "its code changed since it ran"),
        ({"recorded": RecordedExecution("fp", "done", 0.0, False)},
         "its last execution left no recorded output to reuse"),
        ({"same": False}, "its input changed since it ran"),
    ],
)
def test_a_step_runs_when_any_rule_rules_reuse_out(kwargs: dict, reason: str) -> None:
    decision = reuse_of(**kwargs)
    assert not decision.reuse
    assert decision.reason == reason


def test_state_digest_follows_the_state_key_order_not_the_tree_order() -> None:
    a = {"x": {"digest": "1", "pos": 1}, "y": {"digest": "2", "pos": 0}}
    b = {"y": {"digest": "2", "pos": 3}, "x": {"digest": "1", "pos": 7}}
    assert state_digest(a) == state_digest(b) == (("y", "2"), ("x", "1"))
    swapped = {"x": {"digest": "1", "pos": 0}, "y": {"digest": "2", "pos": 1}}
    assert state_digest(swapped) != state_digest(a)  # the same items in another order
    assert state_digest({"x": {"digest": "9", "pos": 1}, "y": {"digest": "2", "pos": 0}}) != (
        state_digest(a)
    )


def test_changed_keys_are_changed_added_and_removed_ones() -> None:
    current = {"same": {"digest": "1"}, "edited": {"digest": "2"}, "gone": {"digest": "3"}}
    target = {"same": {"digest": "1"}, "edited": {"digest": "5"}, "new": {"digest": "4"}}
    assert changed_keys(current, target) == {"edited", "gone", "new"}
    assert changed_keys(current, current) == set()


def test_retry_waits_grow_by_the_backoff() -> None:
    retry = Retry(retries=3, delay_s=0.5, backoff=2.0, on=(OSError,))
    assert retry.attempts == 4
    assert [retry.delay_before(n) for n in (2, 3, 4)] == [0.5, 1.0, 2.0]
    assert Retry(2, timedelta(seconds=3), 1.0).delay_before(3) == 3.0


def test_retry_covers_only_the_named_exceptions_and_the_attempts_left() -> None:
    retry = Retry(retries=2, on=OSError)
    assert retry.retries_after(FileNotFoundError(), 1)
    assert retry.retries_after(OSError(), 2)
    assert not retry.retries_after(OSError(), 3)
    assert not retry.retries_after(ValueError(), 1)
    assert not Retry().retries_after(OSError(), 1)
    assert not Retry(retries=5).retries_after(KeyboardInterrupt(), 1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"retries": -1}, ValueError, "retries must be an int >= 0, got -1"),
        ({"retries": 1.5}, TypeError, "retries must be an int >= 0, got 1.5"),
        ({"retries": True}, TypeError, "retries must be an int"),
        ({"delay_s": -1}, ValueError,
         "retry_delay_s must be a finite number of seconds >= 0, got -1"),
        ({"delay_s": "1s"}, TypeError, "retry_delay_s must be a number of seconds"),
        ({"backoff": 0.5}, ValueError, "backoff must be a number >= 1"),
        ({"on": ValueError("x")}, TypeError, "retry_on must be an exception class or a tuple"),
        ({"on": (OSError, int)}, TypeError, "retry_on must be an exception class"),
        ({"on": ()}, TypeError, "retry_on must be an exception class"),
    ],
)
def test_bad_retry_options_are_refused_naming_the_value(kwargs: dict, error: type,
                                                         match: str) -> None:
    with pytest.raises(error, match=match.replace("(", r"\(")):
        Retry(**kwargs)
