"""The checkpoint-flow command: inspect and manage checkpoints without writing Python.

Exit codes: 0 ok, 1 a problem found (missing or damaged checkpoint, unknown step...), 2 bad
usage. Errors are one line on stderr; inspecting a location never creates it. The commands on a
flow's location are ``flow_commands.py``; the training ones ``training/commands.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__
from .errors import CheckpointFlowError
from .flow_commands import (
    UsageError,
    cmd_gc,
    cmd_history,
    cmd_ls,
    cmd_reset,
    cmd_rewind,
    cmd_rm,
    cmd_show,
    cmd_verify,
    open_flow,
    print_json,
    require_checkpoint,
)
from .training import commands as training_commands
from .ui import command as ui_command

PROG = "checkpoint-flow"


# -- helpers ------------------------------------------------------------------------------------


def _storage_option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _is_training_location(args: argparse.Namespace) -> bool:
    """True when LOCATION holds training checkpoints and no flow records or memoized calls."""
    if args.command not in training_commands.COMMANDS:
        return False
    flow = open_flow(args)
    if not training_commands.holds_checkpoints(args):
        return False
    try:
        require_checkpoint(flow)
    except CheckpointFlowError:
        return True
    return False


# -- commands -----------------------------------------------------------------------------------


def cmd_ui(args: argparse.Namespace) -> int:
    if args.storage_option and not any("://" in location for location in args.locations):
        raise UsageError(
            "--storage-option applies to URL locations (s3://...), not to the local paths "
            f"{', '.join(map(repr, args.locations))}"
        )
    return ui_command.run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoDirectoryError, demo_directory, run_demo

    try:
        location = demo_directory(args.dir)
    except DemoDirectoryError as exc:
        raise CheckpointFlowError(str(exc)) from None
    if args.json:
        state = run_demo(location, echo=lambda line: None)
        print_json({"location": str(location.absolute()), "state": state})
    else:
        run_demo(location)
    return 0


# -- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    storage = argparse.ArgumentParser(add_help=False)
    storage.add_argument(
        "--storage-option",
        metavar="KEY=VALUE",
        type=_storage_option,
        action="append",
        help="passed to fsspec for URL locations; VALUE is parsed as JSON when it parses "
        "(repeatable)",
    )
    storage.add_argument(
        "--key",
        dest="signing_key",
        help="key of signed checkpoints (default: the CHECKPOINT_FLOW_KEY environment variable)",
    )
    location = argparse.ArgumentParser(add_help=False, parents=[storage])
    location.add_argument("location", help="a directory or an fsspec URL such as s3://bucket/run")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON for scripts")

    parser = argparse.ArgumentParser(
        prog=PROG, description="Inspect and manage checkpoint_flow checkpoints."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str,
            parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=list(parents))
        p.set_defaults(func=func)
        return p

    add("ls", cmd_ls, "steps, their status and the resume point; memoized calls",
        [location, as_json])
    p = add("show", cmd_show, "the saved state before a step (keys, types, sizes; a value)",
            [location, as_json])
    p.add_argument("--step", help="step name or index (default: where the next run starts)")
    p.add_argument(
        "value", nargs="?", metavar="KEY", help="show a truncated repr of this value (unpickles it)"
    )
    add("history", cmd_history,
        "past runs: outcome, steps run, reused and skipped, bytes written", [location, as_json])
    p = add("rewind", cmd_rewind, "make the next run start at STEP with its saved state",
            [location, as_json])
    p.add_argument("step", metavar="STEP", help="step name or index")
    p = add("reset", cmd_reset, "forget the resume point: the next run starts at the beginning",
            [location, as_json])
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add("verify", cmd_verify, "check every record and blob; exit 1 naming what is damaged",
        [location, as_json])
    add("gc", cmd_gc, "apply retention now: drop old records and unreferenced blobs",
        [location, as_json])
    p = add("rm", cmd_rm, "remove memoized calls by key prefix, freeing their space",
            [location, as_json])
    p.add_argument("--prefix", required=True,
                   help="remove entries whose key starts with this (not empty)")
    p = add("export", training_commands.export_command,
            "write a training checkpoint's state dicts as a torch or safetensors file",
            [location, as_json])
    training_commands.add_export_arguments(p)
    p = add("ui", cmd_ui, "serve a dashboard of flows and training runs; save a checkpoint from "
            "the browser", [storage])
    ui_command.add_arguments(p)
    p = add("demo", cmd_demo, "run the quick-start story: a step fails, is fixed, and resumes",
            [as_json])
    p.add_argument("--dir", help="where to put the checkpoint: a new or empty directory "
                   "(default: a new temporary directory)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    # argparse assigns positionals before it sees options, so `show LOC --step S KEY` would leave
    # KEY unrecognized; hand it to show here.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "show" and args.value is None and len(extra) == 1 \
            and not extra[0].startswith("-"):
        args.value, extra = extra[0], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if _is_training_location(args):
            return training_commands.run(args)
        return int(args.func(args))
    except UsageError as exc:
        parser.exit(2, f"{PROG}: error: {exc}\n")
    except (CheckpointFlowError, OSError, ValueError) as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    raise AssertionError("unreachable")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
        return f"{type(exc).__name__}: {text}"
    return text
