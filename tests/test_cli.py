"""The checkpoint-flow command, run as a real subprocess on a local directory and on S3."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from checkpoint_flow import CheckpointFlow, memo
from checkpoint_flow.cli import main
from checkpoint_flow.demo import run_demo
from checkpoint_flow.memo import global_api
from tests.support.layout import state_entry

# Each command runs as a real subprocess: slow set (CI runs it; -m 'not slow' skips it).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def cli(
    *args: str, env: dict[str, str] | None = None, stdin: Any = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if k != "CHECKPOINT_FLOW_KEY"}
    full_env = {**inherited, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "checkpoint_flow", *args],
        check=False, capture_output=True, text=True, env=full_env, stdin=stdin, timeout=60,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


@dataclass
class Where:
    """A checkpoint location as the CLI sees it (location + options) and as Python opens it."""

    location: str
    options: list[str]
    open: Callable[..., CheckpointFlow]

    def args(self, command: str, *extra: str) -> list[str]:
        return [command, self.location, *self.options, *extra]


# Every subcommand runs on S3 in test_every_subcommand_on_s3; the detailed tests repeat on S3 in
# the slow suite because each S3 subprocess pays about two seconds of imports and requests.
@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    if request.param == "local":
        location = str(tmp_path / "ckpt")
        return Where(location, [], lambda **kw: CheckpointFlow(location, **kw))
    _fs, bucket, options = request.getfixturevalue("s3")
    location = f"s3://{bucket}/run"
    cli_options = []
    for key, value in options.items():
        text = value if isinstance(value, str) else json.dumps(value)
        cli_options += ["--storage-option", f"{key}={text}"]
    return Where(
        location, cli_options,
        lambda **kw: CheckpointFlow(location, storage_options=options, **kw),
    )


def three_steps(cp: CheckpointFlow, calls: list[str], *, fit_fails: bool) -> CheckpointFlow:
    @cp.add_step(name="prepare")
    def prepare(state: dict[str, Any], data: dict[str, Any]) -> None:
        calls.append("prepare")
        state["numbers"] = list(range(100))
        state["payload"] = bytes(5000)

    @cp.add_step(name="fit")
    def fit(state: dict[str, Any], data: dict[str, Any]) -> None:
        calls.append("fit")
        if fit_fails:
            raise RuntimeError("boom")
        state["mean"] = sum(state["numbers"]) / len(state["numbers"])

    @cp.add_step(name="report")
    def report(state: dict[str, Any], data: dict[str, Any]) -> None:
        calls.append("report")
        state["report"] = "done"

    return cp


def failed_run(where: Where, **kw: Any) -> CheckpointFlow:
    cp = three_steps(where.open(**kw), [], fit_fails=True)
    with pytest.raises(RuntimeError, match="boom"):
        cp.run()
    return cp


# -- every subcommand, locally and on S3 --------------------------------------------------------


def test_ls_shows_steps_resume_point_last_run_and_memo_entries(where):
    cp = failed_run(where)

    @cp.cached(key="embed")
    def embed(x: int) -> bytes:
        return bytes(3000)

    embed(1)
    result = cli(*where.args("ls", "--json"))
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert [(s["name"], s["status"]) for s in listing["steps"]] == [
        ("prepare", "done"), ("fit", "failed"), ("report", "pending"),
    ]
    assert listing["steps"][0]["bytes_written"] > 5000
    assert listing["steps"][1]["error"] == "RuntimeError: boom"
    assert listing["resume_at"] == "fit"
    assert listing["last_run"]["outcome"] == "failed"
    assert listing["last_run"]["ended_at"] >= listing["last_run"]["started_at"]
    (entry,) = listing["memo"]
    assert entry["key"].startswith("embed:") and entry["size"] > 3000

    table = cli(*where.args("ls"))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert any(line.startswith("->") and "fit" in line and "failed" in line for line in lines)
    assert "next run starts at: fit" in lines
    assert any(line.startswith("last run: started ") and "failed at step fit" in line
               for line in lines)
    assert any(line.startswith(entry["key"]) for line in lines)


def test_show_lists_keys_types_and_sizes_and_one_value(where):
    failed_run(where)
    result = cli(*where.args("show", "--json"))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["step"] == "fit"
    assert {k["key"]: k["type"] for k in shown["keys"]} == {"numbers": "list", "payload": "bytes"}
    assert all(k["size"] > 0 for k in shown["keys"])
    assert shown["repr"] is None

    value = cli(*where.args("show", "--step", "fit", "numbers"))
    assert value.returncode == 0, value.stderr
    assert "[0, 1, 2, 3" in value.stdout and "99]" in value.stdout

    truncated = cli(*where.args("show", "payload"))
    assert truncated.returncode == 0, truncated.stderr
    assert "characters in all" in truncated.stdout

    first = cli(*where.args("show", "--step", "0", "--json"))
    assert json.loads(first.stdout)["keys"] == []  # prepare started from an empty state

    assert_one_line_error(cli(*where.args("show", "--step", "report")), 1, "never run")
    assert_one_line_error(cli(*where.args("show", "nokey")), 1, "nokey", "numbers")


def test_history_lists_runs_and_outcomes(where):
    failed_run(where)
    three_steps(where.open(), [], fit_fails=False).run()
    result = cli(*where.args("history", "--json"))
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    assert [(r["outcome"], r["first_step"]) for r in runs] == [
        ("failed", "prepare"), ("succeeded", "fit"),
    ]
    assert runs[0]["failed_step"] == "fit"
    table = cli(*where.args("history")).stdout.splitlines()
    assert "failed" in table[2] and "succeeded" in table[3]


def test_rewind_makes_the_next_run_start_at_the_step(where):
    three_steps(where.open(), [], fit_fails=False).run()
    result = cli(*where.args("rewind", "fit"))
    assert result.returncode == 0, result.stderr
    assert "starts at step 'fit' (2/3)" in result.stdout
    assert where.open().status().resume_at == "fit"
    calls: list[str] = []
    state = three_steps(where.open(), calls, fit_fails=False).run()
    assert calls == ["fit", "report"]
    assert state["mean"] == 49.5

    assert cli(*where.args("rewind", "0")).returncode == 0
    assert where.open().status().resume_at == "prepare"
    assert_one_line_error(cli(*where.args("rewind", "nope")), 1, "nope", "prepare")


def test_rewind_to_a_step_that_never_ran_is_refused(where):
    failed_run(where)
    assert_one_line_error(cli(*where.args("rewind", "report")), 1, "never run")
    assert where.open().status().resume_at == "fit"


def test_reset_with_yes_forgets_the_resume_point(where):
    failed_run(where)
    result = cli(*where.args("reset", "--yes"))
    assert result.returncode == 0, result.stderr
    assert where.open().status().resume_at is None
    calls: list[str] = []
    three_steps(where.open(), calls, fit_fails=False).run()
    assert calls == ["prepare", "fit", "report"]


def test_reset_without_yes_and_without_a_terminal_refuses(where):
    failed_run(where)
    assert_one_line_error(cli(*where.args("reset")), 2, "--yes")
    closed = subprocess.run(
        ["sh", "-c", 'exec "$0" -m checkpoint_flow "$@" <&-', sys.executable,
         *where.args("reset")],
        check=False, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert_one_line_error(closed, 2, "--yes")
    assert where.open().status().resume_at == "fit"


def test_verify_passes_then_names_a_damaged_blob(where):
    cp = failed_run(where)
    ok = cli(*where.args("verify"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok:")
    payload_blob = state_entry(cp, "payload")["blob"]
    path = next(p for p in cp.handler.list("values") if p.endswith(payload_blob))
    cp.handler.write(path, b"not the payload")
    bad = cli(*where.args("verify"))
    assert bad.returncode == 1
    assert payload_blob in bad.stdout
    assert "Traceback" not in bad.stderr and "problem(s) found" in bad.stderr


def test_rm_by_prefix_frees_the_entries_at_once(where):
    cp = where.open()
    calls: list[int] = []

    @cp.cached(key="embed")
    def embed(x: int) -> bytes:
        calls.append(x)
        return bytes([x]) * 4000

    @cp.cached(key="keep")
    def keep(x: int) -> int:
        return x

    embed(1), embed(2), keep(3)
    files = len(cp.handler.list("memo"))
    removed = cli(*where.args("rm", "--prefix", "emb"))
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.count("removed embed:") == 2
    assert [e.key.split(":")[0] for e in memo.entries(cp.store)] == ["keep"]
    assert len(cp.handler.list("memo")) == files - 2  # an entry owns its bytes: freed at once

    collected = cli(*where.args("gc"))
    assert collected.returncode == 0, collected.stderr
    assert where.open().verify() == []
    assert embed(1) == bytes([1]) * 4000  # recomputed: its blob was collected
    assert embed(1) == bytes([1]) * 4000  # and stored again, readable
    assert calls == [1, 2, 1]
    assert where.open().verify() == []
    assert "missing" in cli(*where.args("rm", "--prefix", "missing")).stdout


def test_gc_drops_records_of_older_runs(where):
    cp = failed_run(where)
    three_steps(where.open(), [], fit_fails=False).run()
    # the successful run already collected; a second failure adds records of a newer run
    cp.rewind("fit")
    before = len(cp.store.record_names())
    result = cli(*where.args("gc"))
    assert result.returncode == 0, result.stderr
    assert f"deleted {before - len(cp.store.record_names())} old record(s)" in result.stdout
    assert where.open().status().resume_at == "fit"


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """``main`` called directly: the same outcome as ``cli`` without the interpreter start-up."""
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def test_missing_location_is_one_line_and_not_created(where, capsys):
    missing = Where(where.location + "-missing", where.options, where.open)
    assert_one_line_error(cli(*missing.args("ls")), 1, "-missing")
    assert_one_line_error(cli(*missing.args("rewind", "fit")), 1, "-missing")
    for command in ("show", "history", "verify", "gc"):
        assert_one_line_error(in_process(capsys, *missing.args(command)), 1, "-missing")
    assert_one_line_error(in_process(capsys, *missing.args("reset", "--yes")), 1, "-missing")
    assert_one_line_error(in_process(capsys, *missing.args("rm", "--prefix", "x")), 1, "-missing")
    if "://" not in where.location:
        assert not Path(missing.location).exists()
    else:
        handler = missing.open().handler
        assert not handler.fs.exists(handler.root)


def test_every_subcommand_on_s3(s3):
    fs, bucket, options = s3
    where = Where(
        f"s3://{bucket}/run",
        ["--storage-option", "key=testing", "--storage-option", "secret=testing",
         "--storage-option", f'client_kwargs={json.dumps(options["client_kwargs"])}'],
        lambda: CheckpointFlow(f"s3://{bucket}/run", storage_options=options),
    )
    cp = failed_run(where)
    blob = state_entry(cp, "payload")["blob"]

    @cp.cached(key="embed")
    def embed(x: int) -> bytes:
        return bytes(3000)

    embed(1)
    listing = json.loads(cli(*where.args("ls", "--json")).stdout)
    assert [s["status"] for s in listing["steps"]] == ["done", "failed", "pending"]
    assert listing["resume_at"] == "fit"
    assert [e["key"].split(":")[0] for e in listing["memo"]] == ["embed"]

    shown = cli(*where.args("show", "numbers"))
    assert shown.returncode == 0 and "[0, 1, 2" in shown.stdout
    runs = json.loads(cli(*where.args("history", "--json")).stdout)
    assert [r["outcome"] for r in runs] == ["failed"]
    assert cli(*where.args("verify")).returncode == 0

    assert cli(*where.args("rewind", "prepare")).returncode == 0
    assert where.open().status().resume_at == "prepare"
    assert cli(*where.args("reset", "--yes")).returncode == 0
    assert where.open().status().resume_at is None

    assert "removed embed:" in cli(*where.args("rm", "--prefix", "embed")).stdout
    assert fs.find(f"{bucket}/run/memo") == []
    assert cli(*where.args("gc")).returncode == 0

    (path,) = [p for p in fs.find(f"{bucket}/run/values") if p.endswith(blob)]
    fs.pipe_file(path, b"damaged")
    damaged = cli(*where.args("verify"))
    assert damaged.returncode == 1 and blob in damaged.stdout

    missing = cli("ls", f"s3://{bucket}/nothing-here", *where.options)
    assert_one_line_error(missing, 1, f"no checkpoint at s3://{bucket}/nothing-here")
    assert fs.find(f"{bucket}/nothing-here") == []


# -- local-only behaviour -----------------------------------------------------------------------


def test_empty_directory_holds_no_checkpoint(tmp_path):
    assert_one_line_error(cli("ls", str(tmp_path)), 1, "no checkpoint at")
    assert list(tmp_path.iterdir()) == []


def test_bad_usage_exits_2(tmp_path, capsys):
    assert cli().returncode == 2
    assert_one_line_error(
        cli("ls", str(tmp_path), "--storage-option", "anon=true"), 2, "URL locations"
    )
    for args in (
        ["frobnicate", str(tmp_path)],
        ["ls"],
        ["rm", str(tmp_path)],  # --prefix is required
        ["ls", str(tmp_path), "--storage-option", "novalue"],
        ["show", str(tmp_path), "a", "b"],
        ["ls", str(tmp_path), "--bogus"],
    ):
        result = in_process(capsys, *args)
        assert result.returncode == 2, args
        assert "usage: checkpoint-flow" in result.stderr


def test_damaged_newest_record_is_one_line_exit_1(tmp_path):
    cp = failed_run(Where(str(tmp_path / "c"), [], lambda: CheckpointFlow(tmp_path / "c")))
    newest = cp.store.record_names()[-1]
    cp.handler.write(newest, b"{}")
    assert_one_line_error(cli("ls", str(tmp_path / "c")), 1, newest)
    verify = cli("verify", str(tmp_path / "c"))
    assert verify.returncode == 1 and newest in verify.stdout


def test_signed_checkpoints_need_the_key_and_unsigned_ones_are_refused_with_one(tmp_path):
    signed = Where(str(tmp_path / "s"), [], lambda: CheckpointFlow(tmp_path / "s", key="k1"))
    failed_run(signed)
    assert_one_line_error(cli("ls", signed.location), 1, "signing key")
    assert cli("ls", signed.location, "--key", "k1").returncode == 0
    shown = cli("show", signed.location, "numbers", env={"CHECKPOINT_FLOW_KEY": "k1"})
    assert shown.returncode == 0 and "[0, 1, 2" in shown.stdout

    plain = Where(str(tmp_path / "p"), [], lambda: CheckpointFlow(tmp_path / "p"))
    failed_run(plain)
    refused = cli("show", plain.location, "numbers", "--key", "k1")
    assert_one_line_error(refused, 1, "not signed")


def test_memo_only_location_lists_entries_but_has_no_history(tmp_path):
    memo.set_checkpoint_dir(tmp_path / "m")
    try:
        memo.apply_checkpoint("download")(lambda: b"x" * 100)()
    finally:
        global_api._default_store = None
    listing = cli("ls", str(tmp_path / "m"), "--json")
    assert listing.returncode == 0, listing.stderr
    assert [e["key"] for e in json.loads(listing.stdout)["memo"]] == ["download"]
    assert "no flow run recorded" in cli("ls", str(tmp_path / "m")).stdout
    assert_one_line_error(cli("history", str(tmp_path / "m")), 1, "no flow run recorded")


def _reset_on_a_terminal(location: str, answer: bytes) -> tuple[int, str]:
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "checkpoint_flow", "reset", location],
            stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        os.write(controller, answer)
        out, _err = proc.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    return proc.returncode, out.decode()


def test_reset_on_a_terminal_asks_first(tmp_path):
    where = Where(str(tmp_path / "c"), [], lambda: CheckpointFlow(tmp_path / "c"))
    failed_run(where)
    code, out = _reset_on_a_terminal(where.location, b"n\n")
    assert code == 1 and "now step 'fit'" in out and "nothing changed" in out
    assert where.open().status().resume_at == "fit"
    code, out = _reset_on_a_terminal(where.location, b"y\n")
    assert code == 0 and "starts at the beginning" in out
    assert where.open().status().resume_at is None


# -- the demo -----------------------------------------------------------------------------------


def test_demo_function_tells_the_story_and_resumes_at_the_fixed_step(tmp_path):
    lines: list[str] = []
    state = run_demo(tmp_path / "demo", echo=lines.append)
    assert state["mean"] == 5.5
    assert sum("#0 'prepare': building the numbers" in line for line in lines) == 1
    assert sum("#1 'fit'" in line and "computing the mean" in line for line in lines) == 2
    # the story numbers steps as the status table does
    table = [row.split() for line in lines for row in line.splitlines()]
    assert ["0", "prepare"] in [row[:2] for row in table]
    assert ["->", "1", "fit"] in [row[:3] for row in table]
    assert any("failed with KeyError" in line for line in lines)
    assert CheckpointFlow(tmp_path / "demo").status().resume_at is None
    with pytest.raises(FileExistsError, match="already holds a checkpoint"):
        run_demo(tmp_path / "demo", echo=lines.append)


def test_demo_command_prints_the_story_and_leaves_an_inspectable_checkpoint(tmp_path):
    result = cli("demo", "--dir", str(tmp_path / "d"))
    assert result.returncode == 0, result.stderr
    assert "next run starts at: fit" in result.stdout
    assert "result: mean of 10 numbers: 5.5" in result.stdout
    listing = json.loads(cli("ls", str(tmp_path / "d"), "--json").stdout)
    assert [s["status"] for s in listing["steps"]] == ["done", "done", "done"]
    assert_one_line_error(cli("demo", "--dir", str(tmp_path / "d")), 1, "already holds")


def test_demo_without_dir_uses_a_fresh_temporary_directory():
    result = cli("demo")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("checkpoints go to ")
    location = Path(first.removeprefix("checkpoints go to "))
    try:
        assert (location / "records").is_dir()
    finally:
        shutil.rmtree(location)


# -- scripts and first contact ------------------------------------------------------------------


def test_version_is_the_package_version():
    import checkpoint_flow

    result = cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"checkpoint-flow {checkpoint_flow.__version__}"


def test_every_command_speaks_json(tmp_path):
    where = Where(str(tmp_path / "c"), [], lambda: CheckpointFlow(tmp_path / "c"))
    cp = failed_run(where)

    @cp.cached(key="embed")
    def embed(x: int) -> bytes:
        return bytes(3000)

    embed(1)

    def as_json(*args: str, code: int = 0) -> Any:
        result = cli(*args, "--json")
        assert result.returncode == code, result.stderr
        return json.loads(result.stdout)

    verified = as_json("verify", where.location)
    assert verified["ok"] is True and verified["problems"] == []
    assert verified["records"] >= 1 and verified["memo_entries"] == 1

    rewound = as_json("rewind", where.location, "prepare")
    assert rewound == {
        "location": cp.location, "resume_at": "prepare", "position": 0, "steps": 3,
        "state_from": rewound["state_from"],
    }
    assert isinstance(rewound["state_from"], float)
    assert where.open().status().resume_at == "prepare"

    reset = as_json("reset", where.location, "--yes")
    assert reset == {"location": cp.location, "resume_at": None, "was_resume_at": "prepare"}
    assert_one_line_error(cli("reset", where.location, "--json"), 2, "--yes")

    removed = as_json("rm", where.location, "--prefix", "emb")
    assert [e["key"].split(":")[0] for e in removed["removed"]] == ["embed"]
    assert removed["bytes"] > 3000 and removed["prefix"] == "emb"

    assert cp.handler.list("memo") == []  # an entry owns its bytes: rm freed them
    collected = as_json("gc", where.location)
    assert set(collected) == {"location", "records_deleted", "blobs_deleted"}
    assert collected["location"] == cp.location
    assert all(isinstance(collected[k], int) for k in ("records_deleted", "blobs_deleted"))

    for blob in cp.handler.list("values"):
        cp.handler.write(blob, b"damaged")
    damaged = as_json("verify", where.location, code=1)
    assert damaged["ok"] is False and damaged["problems"]

    demo = as_json("demo", "--dir", str(tmp_path / "d"))
    assert demo["location"] == str(tmp_path / "d") and demo["state"]["mean"] == 5.5


def test_rm_with_an_empty_prefix_removes_nothing_and_says_why(tmp_path):
    cp = CheckpointFlow(tmp_path / "c")
    cp.cached(key="keep")(lambda: 1)()
    assert_one_line_error(cli("rm", str(tmp_path / "c"), "--prefix", ""), 2, "every memoized call")
    assert [e.key for e in memo.entries(cp.store)] != []


def test_errors_name_the_option_the_user_typed(tmp_path):
    where = Where(str(tmp_path / "c"), [], lambda: CheckpointFlow(tmp_path / "c"))
    failed_run(where)
    rewind = cli("rewind", where.location, "nope")
    assert_one_line_error(rewind, 1, "STEP 'nope' names no step", "0:prepare")
    assert "checkpoint=" not in rewind.stderr
    show = cli("show", where.location, "--step", "9")
    assert_one_line_error(show, 1, "--step 9 is out of range", "2:report")
    assert "checkpoint=" not in show.stderr


def test_ls_on_a_location_holding_something_else_says_what_it_found(tmp_path):
    other = tmp_path / "other"
    (other / "data").mkdir(parents=True)
    (other / "notes.txt").write_text("hi")
    assert_one_line_error(
        cli("ls", str(other)), 1, f"no checkpoint at {other}", "2 other entries (data/, notes.txt)"
    )
    training = tmp_path / "training"
    training.mkdir()
    (training / "checkpoint_epoch_0001.ckpt").write_bytes(b"x")
    (training / "latest.ckpt").write_bytes(b"x")
    assert_one_line_error(cli("ls", str(training)), 1, "training checkpoints", "CheckpointManager")
    state_file = tmp_path / "state.pkl"
    state_file.write_bytes(b"\x80\x04K\x01.")
    assert_one_line_error(cli("ls", str(state_file)), 1, "is an existing file", "pickle")


def test_demo_on_a_used_directory_says_so_in_words(tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "thesis.tex").write_text("...")
    result = cli("demo", "--dir", str(used))
    assert_one_line_error(result, 1, f"{used} is not empty", "thesis.tex", "new or empty")
    assert "Error" not in result.stderr
    assert [p.name for p in used.iterdir()] == ["thesis.tex"]
    assert cli("demo", "--dir", str(tmp_path / "d")).returncode == 0
    again = cli("demo", "--dir", str(tmp_path / "d"))
    assert_one_line_error(again, 1, "already holds a checkpoint", "checkpoint-flow ls")
    assert "Error" not in again.stderr


def test_demo_says_its_directory_can_be_deleted(tmp_path):
    lines: list[str] = []
    run_demo(tmp_path / "demo", echo=lines.append)
    assert lines[-1] == f"the checkpoint is only an example: delete {tmp_path / 'demo'} when you " \
        "are done"


def test_removing_every_memoized_call_frees_its_results_at_once(tmp_path):
    memo.set_checkpoint_dir(tmp_path / "m")
    try:
        memo.apply_checkpoint("download")(lambda: b"x" * 2000)()
        assert len(list((tmp_path / "m" / "memo").iterdir())) == 1
        memo.del_checkpoint("download")
    finally:
        global_api._default_store = None
    assert list((tmp_path / "m" / "memo").iterdir()) == []
    assert_one_line_error(cli("gc", str(tmp_path / "m")), 1, "no checkpoint at")
    assert "other entries" not in cli("ls", str(tmp_path / "m")).stderr
