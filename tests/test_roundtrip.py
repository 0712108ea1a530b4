"""Arbitrary picklable states come back exactly, through the store and through a resume."""

from __future__ import annotations

import math
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkpoint_flow import CheckpointFlow

leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.complex_numbers(allow_nan=False)
)
values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=5)
    | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=5), children, max_size=5)
    | st.frozensets(st.integers(), max_size=5)
    | st.sets(st.text(max_size=3), max_size=5),
    max_leaves=20,
)
states = st.dictionaries(st.text(max_size=20), values, max_size=8)


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=states, produced=states)
def test_state_round_trips_exactly_through_a_resume(initial, produced):
    with tempfile.TemporaryDirectory() as location:
        cp = CheckpointFlow(location)
        cp.add_step(name="produce")(lambda s, d: s.update(produced))

        def stop(state, data):
            raise RuntimeError("stop")

        cp.add_step(name="stop")(stop)
        try:
            cp.run(initial)
        except RuntimeError:
            pass
        expected = {**initial, **produced}
        assert _same(CheckpointFlow(location).state_before("stop"), expected)
        assert _same(CheckpointFlow(location).state_before("produce"), initial)
