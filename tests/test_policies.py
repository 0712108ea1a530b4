"""Every policy family has one shape: a callable object composing with | and & (and reflected),
a frozen value validated on construction with a repr that reads like the call."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import timedelta

import pytest

from checkpoint_flow import (
    Boundary,
    CheckpointFlow,
    CheckpointInfo,
    FlowRetention,
    KeepLastRecords,
    KeepLatestRun,
    LoadPolicy,
    Policy,
    RecordSummary,
    RetentionRule,
    StepLoad,
    Trigger,
    checks,
    every_n_epochs,
    every_n_steps,
    keep_all,
    keep_best,
    keep_last,
    load_always,
    load_first,
    load_never,
    load_steps,
    min_interval,
    never,
    on_improvement,
)


def _info(file: str, epoch: int, loss: float) -> CheckpointInfo:
    return CheckpointInfo(file, epoch, None, {"loss": loss}, timestamp=epoch, seq=epoch)


CHECKPOINTS = [_info(f"e{n}.ckpt", n, loss) for n, loss in enumerate([5.0, 1.0, 3.0, 2.0, 4.0])]
RECORDS = [RecordSummary(seq, f"records/{seq}.rec", run) for seq, run in
           [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c")]]
EPOCH_2 = Boundary("epoch", 2, None, now=100.0, last_save=0.0)

# One member of each family, with what it answers for its family's subject.
FAMILIES = [
    pytest.param(Trigger, every_n_epochs(2), EPOCH_2, True, id="trigger"),
    pytest.param(RetentionRule, keep_last(2), CHECKPOINTS, {"e3.ckpt", "e4.ckpt"}, id="retention"),
    pytest.param(FlowRetention, KeepLastRecords(2), RECORDS, {4, 5}, id="flow-retention"),
    pytest.param(LoadPolicy, load_first(), StepLoad(index=3, first=3), True, id="load"),
]


@pytest.mark.parametrize(("family", "member", "subject", "verdict"), FAMILIES)
def test_every_family_shares_the_policy_shape(family, member, subject, verdict):
    assert isinstance(member, family) and isinstance(member, Policy)
    assert member(subject) == verdict
    assert dataclasses.is_dataclass(member)
    with pytest.raises(dataclasses.FrozenInstanceError):
        member.anything = 1
    assert eval(repr(member), vars(__import__("checkpoint_flow"))) == member
    assert hash(member) == hash(eval(repr(member), vars(__import__("checkpoint_flow"))))
    assert pickle.loads(pickle.dumps(member)) == member
    for combined in (member | member, member & member):
        assert isinstance(combined, family)
        assert combined(subject) == verdict


@pytest.mark.parametrize(("family", "member", "subject", "verdict"), FAMILIES)
def test_a_plain_function_composes_on_either_side(family, member, subject, verdict):
    def no(subject):
        return set() if isinstance(verdict, set) else False

    for combined in (no | member, member | no):
        assert isinstance(combined, family)
        assert combined(subject) == verdict
    for combined in (no & member, member & no):
        assert isinstance(combined, family)
        assert not combined(subject)
    with pytest.raises(TypeError, match="3"):
        member | 3


def test_triggers_combine_as_either_and_both():
    throttled = every_n_epochs(1) & min_interval(timedelta(minutes=10))
    assert throttled(dataclasses.replace(EPOCH_2, now=700.0, last_save=50.0))
    assert not throttled(dataclasses.replace(EPOCH_2, now=600.0, last_save=50.0))
    either = every_n_steps(3) | on_improvement()
    assert either(Boundary("step", None, 3, improved=False))
    assert either(Boundary("step", None, 1, improved=True))
    assert not either(Boundary("step", None, 1, improved=False))
    assert repr(throttled | never()) == "(every_n_epochs(1) & min_interval(600)) | never()"


def test_nested_combinations_of_one_kind_flatten():
    combined = every_n_epochs(1) | every_n_steps(2) | never()
    assert combined.parts == (every_n_epochs(1), every_n_steps(2), never())
    assert combined == every_n_epochs(1) | (every_n_steps(2) | never())


def test_retention_rules_keep_union_or_intersection():
    last_three = keep_last(3)
    best_two = keep_best(2, "loss")
    assert best_two(CHECKPOINTS) == {"e1.ckpt", "e3.ckpt"}
    assert (last_three | best_two)(CHECKPOINTS) == {"e1.ckpt", "e2.ckpt", "e3.ckpt", "e4.ckpt"}
    assert (last_three & best_two)(CHECKPOINTS) == {"e3.ckpt"}
    assert (keep_all() & (lambda cps: ["e0.ckpt"]))(CHECKPOINTS) == {"e0.ckpt"}
    with pytest.raises(TypeError, match="iterable of what to keep"):
        (keep_last(1) | (lambda cps: "e0.ckpt"))(CHECKPOINTS)


def test_flow_retention_rules_see_typed_record_summaries():
    assert KeepLatestRun()(RECORDS) == {4, 5}
    assert (KeepLatestRun() | KeepLastRecords(3))(RECORDS) == {3, 4, 5}
    assert (KeepLatestRun() & KeepLastRecords(1))(RECORDS) == {5}
    # A rule written against the 0.1 dicts still reads what it expects.
    assert RECORDS[2]["run"]["id"] == "b" and RECORDS[2]["seq"] == 3
    assert "seq" in RECORDS[2] and RECORDS[2].get("run", {})["id"] == "b"
    assert dict(RECORDS[2]) == {"seq": 3, "name": "records/3.rec", "run": {"id": "b"}}
    assert RECORDS[2].get("missing", 7) == 7 and "missing" not in RECORDS[2]


def test_a_flow_applies_a_composed_retention_rule(tmp_path):
    cp = CheckpointFlow(tmp_path, retention=KeepLatestRun() | KeepLastRecords(4))
    cp.add_step(name="a")(lambda s, d: s.update(n=s.get("n", 0) + 1))
    cp.add_step(name="b")(lambda s, d: None)
    for _ in range(3):
        cp.run({})
    cp.gc()
    names = sorted((tmp_path / "records").iterdir(), key=lambda p: int(p.name.split(".")[0]))
    bodies = [cp.store.read_record(f"records/{p.name}") for p in names]
    summaries = [RecordSummary(b["seq"], "", b["run"]["id"]) for b in bodies]
    kept = cp.retention(summaries)
    newest = bodies[-1]["seq"]
    # The last four records, plus the previous run's last, which the last four do not reach.
    assert kept == set(range(newest - 3, newest + 1)) | KeepLatestRun()(summaries)
    assert len(kept) == 5
    needed, _blobs = cp.store.reachable([b for b in bodies if b["seq"] in kept])
    assert {b["seq"] for b in bodies} == kept | needed
    assert cp.verify() == []


def test_load_policies_and_their_strings():
    assert load_always()(StepLoad(2, 0)) and not load_never()(StepLoad(0, 0))
    assert not load_first()(StepLoad(2, 0))
    steps = load_steps([False, True, False])
    assert [steps(StepLoad(i, 0)) for i in range(3)] == [False, True, False]
    assert (load_first() | steps)(StepLoad(0, 0)) and (load_first() | steps)(StepLoad(1, 0))
    with pytest.raises(TypeError, match="list of booleans"):
        load_steps([1, 0])


def test_a_run_takes_a_composed_load_policy(tmp_path):
    loaded: list[str] = []

    def loader(name):
        return lambda state: loaded.append(name) or {}

    cp = CheckpointFlow(tmp_path)
    for name in "abc":
        cp.add_step(name=name, load=loader(name))(lambda s, d: None)
    cp.run({}, load_policy=load_first() | load_steps([False, False, True]))
    assert loaded == ["a", "c"]
    loaded.clear()
    cp.run({}, load_policy=lambda step: step.index == 1)
    assert loaded == ["b"]
    with pytest.raises(ValueError, match="2 booleans but the flow has 3 steps"):
        cp.run({}, load_policy=load_never() | load_steps([True, True]))


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: every_n_epochs(0), ValueError, "every_n_epochs must be an int >= 1, got 0"),
        (lambda: every_n_steps(True), TypeError, "every_n_steps must be an int >= 1, got True"),
        (lambda: min_interval("5m"), TypeError, "min_interval_s must be a number of seconds"),
        (lambda: min_interval(float("inf")), ValueError, "finite number of seconds >= 0"),
        (lambda: keep_last(-1), ValueError, "keep_last_n must be an int >= 0, got -1"),
        (lambda: keep_best(1, "loss", "lowest"), ValueError,
         "mode='lowest' is not valid; valid choices: 'min', 'max'"),
        (lambda: KeepLastRecords(0), ValueError, "n must be an int >= 1, got 0"),
    ],
)
def test_bad_parameters_are_named_with_what_is_accepted(build, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        build()


def test_the_checks_accept_timedeltas_and_refuse_bools():
    assert checks.seconds("t", timedelta(minutes=1)) == 60.0
    assert checks.count("n", 3, minimum=1) == 3
    assert checks.choice("mode", "max", ("min", "max")) == "max"
    with pytest.raises(TypeError, match="t must be a number of seconds or a timedelta"):
        checks.seconds("t", True)
    with pytest.raises(TypeError, match="flag must be True or False, got 1"):
        checks.flag("flag", 1)


def test_the_flow_checks_its_arguments_with_the_shared_checks(tmp_path):
    with pytest.raises(ValueError, match="on_code_change='rerun' is not valid; valid choices"):
        CheckpointFlow(tmp_path, on_code_change="rerun")
    with pytest.raises(ValueError, match="lock_ttl_s must be a finite number of seconds > 0"):
        CheckpointFlow(tmp_path, lock_ttl_s=0)
    assert CheckpointFlow(tmp_path, lock_ttl_s=timedelta(minutes=2)).lock_ttl_s == 120.0
    cp = CheckpointFlow(tmp_path)
    cp.add_step(name="a")(lambda s, d: None)
    with pytest.raises(ValueError, match="on_corrupt='skip' is not valid; valid choices"):
        cp.run({}, on_corrupt="skip")


def test_a_policy_of_another_family_is_refused_where_it_would_only_fail_later(tmp_path):
    refused = "retention takes a FlowRetention .* which is a RetentionRule"
    with pytest.raises(TypeError, match=refused):
        CheckpointFlow(tmp_path, retention=keep_last(1))
    with pytest.raises(TypeError, match="which is a LoadPolicy"):
        KeepLatestRun() | load_first()
    with pytest.raises(TypeError, match="trigger takes a Trigger .* which is a RetentionRule"):
        every_n_epochs(1) & keep_all()


def test_a_rule_must_answer_with_what_its_family_keeps():
    by_epoch = keep_last(1) | (lambda checkpoints: [c.epoch for c in checkpoints])
    with pytest.raises(TypeError, match=r"iterable of what to keep \(each a str\)"):
        by_epoch(CHECKPOINTS)
    by_summary = KeepLatestRun() | (lambda records: records[-1:])
    with pytest.raises(TypeError, match=r"each a int"):
        by_summary(RECORDS)


def test_a_combination_needs_something_to_combine():
    from checkpoint_flow.training.retention import KeepCommon

    with pytest.raises(ValueError, match="KeepCommon needs at least one policy"):
        KeepCommon()
