"""Commands on a flow's location: ls, show, history, rewind, reset, verify, gc and rm.

``cli.py`` parses the command line and calls these; each returns the exit code (0 ok, 1 a
problem found) and raises UsageError for a request that cannot be done as asked (exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from . import memo
from .errors import CheckpointFlowError
from .flow import CheckpointFlow
from .flow_record import FlowRecord, RunInfo
from .status import format_size
from .storage.handlers import FsspecHandler, LocalHandler
from .storage.namespaces import Namespace
from .storage.store import PENDING, RECORDS, VALUES, Manifest

_REPR_LIMIT = 2000


class UsageError(Exception):
    """The command line asks for something that cannot be done as asked (exit 2)."""


# -- helpers ------------------------------------------------------------------------------------


def open_flow(args: argparse.Namespace) -> CheckpointFlow:
    options = dict(args.storage_option or [])
    if options and "://" not in args.location:
        raise UsageError(
            "--storage-option applies to URL locations (s3://...), not to the local path "
            f"{args.location!r}"
        )
    return CheckpointFlow(args.location, storage_options=options or None, key=args.signing_key)


def require_checkpoint(flow: CheckpointFlow) -> None:
    """Raise unless the location holds flow records or memoized entries."""
    handler = flow.handler
    if isinstance(handler, LocalHandler) and not handler.root.exists():
        raise CheckpointFlowError(f"no such location: {flow.location}")
    flow.store.check_format()
    if flow.store.record_names():
        return
    if Namespace(flow.store, memo.MEMO).names():
        return
    raise CheckpointFlowError(f"no checkpoint at {flow.location}{_what_is_there(flow)}")


def _what_is_there(flow: CheckpointFlow) -> str:
    """For a location without checkpoints: what it holds instead, if anything."""
    handler = flow.handler
    try:
        if isinstance(handler, LocalHandler):
            names = sorted(
                f"{e.name}/" if e.is_dir() else e.name for e in os.scandir(handler.root)
            )
        elif isinstance(handler, FsspecHandler):
            names = sorted(
                p.rstrip("/").rsplit("/", 1)[-1] for p in handler.fs.ls(handler.root, detail=False)
            )
        else:
            return ""
    except (OSError, ValueError):
        return ""
    # The library's own (empty) folders and lock files are not "something else".
    ours = {"lock", "lock.json", "locks", VALUES, RECORDS, PENDING, memo.MEMO, "items"}
    names = [n for n in names if n.rstrip("/") not in ours]
    if not names:
        return ""
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    if any(n.endswith(".ckpt") for n in names):
        return (
            f"; it holds training checkpoints ({shown}): open them with "
            f"CheckpointManager({flow.location!r}) and its load() or restore()"
        )
    return f"; it holds {len(names)} other entr{'y' if len(names) == 1 else 'ies'} ({shown})"


def _require_record(flow: CheckpointFlow) -> FlowRecord:
    require_checkpoint(flow)
    record = flow.record()
    if record is None:
        raise CheckpointFlowError(
            f"no flow run recorded at {flow.location} (it holds memoized calls only)"
        )
    return record


def _step_ref(text: str, names: Sequence[str]) -> int | str:
    if text not in names and re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


_size = format_size


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return lines


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _site(call_site: str | None) -> str:
    """``file:line`` with the file's last two path parts, enough to find it."""
    if not call_site:
        return "-"
    path, _, line = call_site.rpartition(":")
    return f"{'/'.join(path.replace(os.sep, '/').split('/')[-2:])}:{line}"


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _short_repr(value: Any) -> str:
    text = repr(value)
    if len(text) > _REPR_LIMIT:
        return f"{text[:_REPR_LIMIT]}... ({len(text)} characters in all)"
    return text


# -- commands -----------------------------------------------------------------------------------


def cmd_ls(args: argparse.Namespace) -> int:
    flow = open_flow(args)
    require_checkpoint(flow)
    status = flow.status()
    entries = memo.entries(flow.store)
    if args.json:
        print_json(
            {
                "location": status.location,
                "steps": [dataclasses.asdict(s) for s in status.steps],
                "resume_at": status.resume_at,
                "last_run": status.last_run,
                "memo": [dataclasses.asdict(e) for e in entries],
            }
        )
        return 0
    print(f"checkpoint flow at {status.location}")
    if status.steps:
        rows = [
            [
                "->" if s.name == status.resume_at else "",
                str(s.position),
                s.name,
                s.status,
                "-" if s.duration_s is None else f"{s.duration_s:.2f}s",
                _size(s.bytes_written),
            ]
            for s in status.steps
        ]
        print()
        print("\n".join(_table(["", "#", "step", "status", "last took", "written"], rows)))
        print()
        print(
            f"next run starts at: {status.resume_at}" if status.resume_at
            else "next run starts at the beginning"
        )
    else:
        print("no flow run recorded")
    if status.last_run:
        run = RunInfo.from_json(status.last_run)
        outcome = run.outcome
        if run.failed_step:
            outcome = f"{outcome} at step {run.failed_step}"
        print(
            f"last run: started {_when(run.started_at)}, ended {_when(run.ended_at)}, {outcome}"
        )
    print()
    if entries:
        print(f"memoized calls ({len(entries)}):")
        rows = [[e.key, _size(e.size), _when(e.created_at), _site(e.call_site)] for e in entries]
        print("\n".join(_table(["key", "size", "created", "call site"], rows)))
    else:
        print("memoized calls: none")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    flow = open_flow(args)
    record = _require_record(flow)
    names = record.order
    if args.step is not None:
        index = CheckpointFlow._index_of(_step_ref(args.step, names), names, option="--step")
        chosen = names[index]
        step: str | None = chosen
        ref = record.step(chosen).before
        if ref is None:
            raise CheckpointFlowError(f"step {step!r} has never run at {flow.location}; no state")
        label = f"state before step {step!r}"
    elif record.resume:
        step = record.resume
        ref = record.step(step).before or record.state
        label = f"state before step {step!r}, where the next run starts"
    else:
        step = None
        ref = record.state
        label = "state left by the last run (the next run starts at the beginning)"
    manifest: Manifest = flow.store.manifest(ref) if ref is not None else {}
    keys = [{"key": k, "type": e.get("type"), "size": e.get("size")} for k, e in manifest.items()]
    value_repr = None
    if args.value is not None:
        if args.value not in manifest:
            raise CheckpointFlowError(
                f"no key {args.value!r} in the {label}; keys: {', '.join(manifest) or 'none'}"
            )
        where = f"value {args.value!r} of the {label}"
        value = flow.store.get_value(manifest[args.value], where=where)
        value_repr = _short_repr(value)
        keys = [k for k in keys if k["key"] == args.value]
    if args.json:
        print_json({"step": step, "label": label, "keys": keys, "repr": value_repr})
        return 0
    print(f"location: {flow.location}")
    print(f"{label}:")
    if keys:
        rows = [[str(k["key"]), str(k["type"]), _size(_int_or_none(k["size"]))] for k in keys]
        print("\n".join(_table(["key", "type", "size"], rows)))
    else:
        print("(empty)")
    if value_repr is not None:
        print()
        print(value_repr)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    flow = open_flow(args)
    _require_record(flow)
    runs = flow.runs()
    if args.json:
        print_json([r.to_json() for r in runs])
        return 0
    rows = [
        [
            r.id[:8],
            _when(r.started_at),
            _when(r.ended_at),
            str(r.outcome),
            r.first_step or "-",
            r.last_step or "-",
            r.failed_step or "-",
            f"{r.executed}/{r.reused}/{r.skipped}",
            _size(r.bytes_written),
            f"{r.host}:{r.pid}",
        ]
        for r in runs
    ]
    print(f"runs at {flow.location}, oldest first:")
    headers = ["run", "started", "ended", "outcome", "from step", "to step", "failed at",
               "ran/reused/skipped", "written", "host:pid"]
    print("\n".join(_table(headers, rows)))
    return 0


def cmd_rewind(args: argparse.Namespace) -> int:
    flow = open_flow(args)
    record = _require_record(flow)
    names = record.order
    name = names[CheckpointFlow._index_of(_step_ref(args.step, names), names, option="STEP")]
    flow.rewind(name)
    ran_at = record.step(name).ran_at
    if args.json:
        print_json(
            {"location": flow.location, "resume_at": name, "position": names.index(name),
             "steps": len(names), "state_from": ran_at}
        )
        return 0
    print(
        f"the next run at {flow.location} starts at step {name!r} "
        f"({names.index(name) + 1}/{len(names)}) with the state it received on {_when(ran_at)}"
    )
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    if not args.yes and args.json:
        raise UsageError("reset --json cannot ask for confirmation; pass --yes")
    if not args.yes and (sys.stdin is None or sys.stdin.closed or not sys.stdin.isatty()):
        raise UsageError("reset needs confirmation and stdin is not a terminal; pass --yes")
    flow = open_flow(args)
    record = _require_record(flow)
    if not args.yes:
        where = f"step {record.resume!r}" if record.resume else "no step"
        try:
            answer = input(
                f"Forget the resume point at {flow.location} (now {where})? The next run starts "
                "at the beginning. [y/N] "
            )
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing changed")
            return 1
    flow.reset()
    if args.json:
        print_json({"location": flow.location, "resume_at": None,
                     "was_resume_at": record.resume})
        return 0
    print(f"the next run at {flow.location} starts at the beginning")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    flow = open_flow(args)
    require_checkpoint(flow)
    problems = flow.verify()
    if args.json:
        print_json(
            {"location": flow.location, "ok": not problems, "problems": problems,
             "records": len(flow.store.record_names()),
             "memo_entries": len(Namespace(flow.store, memo.MEMO).names())}
        )
        return 1 if problems else 0
    if problems:
        for problem in problems:
            print(problem)
        print(f"{len(problems)} problem(s) found at {flow.location}", file=sys.stderr)
        return 1
    records = len(flow.store.record_names())
    entries = len(Namespace(flow.store, memo.MEMO).names())
    print(f"ok: {records} record(s) and {entries} memoized call(s) at {flow.location} are intact")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    flow = open_flow(args)
    if not flow.handler.list(VALUES):  # values left after the last record went count
        require_checkpoint(flow)
    records, blobs = flow.gc()
    if args.json:
        print_json({"location": flow.location, "records_deleted": records,
                     "blobs_deleted": blobs})
        return 0
    print(f"deleted {records} old record(s) and {blobs} unreferenced blob(s) at {flow.location}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    if not args.prefix:
        raise UsageError(
            "--prefix '' would remove every memoized call; give the start of the keys to "
            "remove (see `ls`)"
        )
    flow = open_flow(args)
    require_checkpoint(flow)
    removed = memo.remove(flow.store, args.prefix)
    if args.json:
        print_json(
            {"location": flow.location, "prefix": args.prefix,
             "removed": [dataclasses.asdict(e) for e in removed],
             "bytes": sum(e.size for e in removed)}
        )
        return 0
    for entry in removed:
        print(f"removed {entry.key}")
    print(
        f"removed {len(removed)} memoized call(s) starting with {args.prefix!r}; "
        f"{_size(sum(e.size for e in removed))} freed"
    )
    return 0

