"""Every documented example runs as written.

Each fenced ```python block of README.md and docs/*.md runs in a fresh interpreter, in a new
temporary directory, and every shell block line that invokes ``checkpoint-flow`` (or
``python -m checkpoint_flow``) runs too. A shell block written as a transcript (``$ `` prompts)
must also print what it shows (see ``_normalized``: times, sizes, counts, ids and the temporary
directory may differ) and exit as shown by a following ``echo $?`` (0 otherwise).

What a block needs but should not show is declared in an HTML comment right above it (only
blank lines or other such comments between); CONTRIBUTING.md explains the same:

- ``<!-- setup: CODE -->`` hidden Python run first in the same namespace (fakes such as
  ``read_orders``); for a shell block it runs in the same directory before the commands.
- ``<!-- after: CODE -->`` hidden Python run after the block: assertions that keep the text true.
- ``<!-- raises: ExceptionName -->`` the block must raise this (the story of a failing run).
- ``<!-- continue -->`` the block continues the previous example of the file: same directory,
  and for consecutive Python blocks the same namespace.
- ``<!-- s3: BUCKET -->`` start the S3 test server, create BUCKET, and point the block's
  ``http://127.0.0.1:9000`` at the server.
- ``<!-- skip: REASON -->`` not runnable on purpose; REASON says why.
- ``<!-- xfail: REASON -->`` fails because of a known bug named in REASON; the test turns red as
  soon as the bug is fixed, so the marker is removed with the fix.

HTML comments cannot contain ``--``, so hidden code avoids it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Each example runs in a fresh interpreter: slow set (CI runs it; -m 'not slow' skips it).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).resolve().parent / "support" / "doc_runner.py"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DIRECTIVES = ("setup", "after", "raises", "continue", "s3", "skip", "xfail")
SHELL_LANGS = ("bash", "sh", "shell", "console", "")
S3_PLACEHOLDER = "http://127.0.0.1:9000"

_DIRECTIVE = re.compile(r"<!--\s*(" + "|".join(DIRECTIVES) + r")\b\s*:?(.*?)-->", re.DOTALL)


@dataclass
class Block:
    file: str
    line: int  # the first line of the block's content
    lang: str  # "python" or "shell"
    code: str
    directives: dict[str, tuple[str, int]] = field(default_factory=dict)


@dataclass
class Command:
    line: int
    text: str
    expected: list[str] | None  # shown output of a transcript command
    exit_code: int = 0


@dataclass
class Example:
    """Blocks that run together: one directory, one namespace for consecutive Python blocks."""

    blocks: list[Block]

    @property
    def name(self) -> str:
        first = self.blocks[0]
        return f"{first.file}:{first.line}"

    def directive(self, name: str) -> str | None:
        for block in self.blocks:
            if name in block.directives:
                return block.directives[name][0]
        return None


def parse_markdown(text: str, file: str) -> list[Block]:
    """The fenced blocks of a Markdown text with the directives written right above them."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: dict[str, tuple[str, int]] = {}
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith("<!--"):
            start = i
            while "-->" not in lines[i]:
                i += 1
            comment = "\n".join(lines[start : i + 1]).strip()
            match = _DIRECTIVE.fullmatch(comment)
            if match:
                name, value = match.group(1), match.group(2)
                value_line = start + 1
                if value.startswith("\n"):
                    value, value_line = value[1:], value_line + 1
                pending[name] = (textwrap.dedent(value).strip("\n").rstrip(), value_line)
            else:
                pending = {}
            i += 1
            continue
        if stripped.startswith("```"):
            indent = len(lines[i]) - len(lines[i].lstrip())
            info = stripped[3:].strip().split(" ")[0].lower()
            start = i + 1
            i += 1
            while not lines[i].strip().startswith("```"):
                i += 1
            body = "\n".join(line[indent:] for line in lines[start:i])
            lang = "python" if info in ("python", "py") else "shell" if info in SHELL_LANGS \
                else info
            blocks.append(Block(file, start + 1, lang, body, pending))
            pending = {}
            i += 1
            continue
        if stripped:
            pending = {}
        i += 1
    return blocks


def shell_commands(block: Block) -> list[Command]:
    """The commands of a shell block; for a transcript, with the output it shows."""
    joined: list[tuple[int, str]] = []
    carry = ""
    for number, raw in enumerate(block.code.splitlines(), start=block.line):
        line = carry + " " + raw.strip() if carry else raw
        if line.endswith("\\"):
            carry = line[:-1].rstrip()
            continue
        carry = ""
        joined.append((number, line))
    transcript = any(line.startswith("$ ") for _, line in joined)
    commands: list[Command] = []
    for number, line in joined:
        if transcript:
            if line.startswith("$ "):
                commands.append(Command(number, line[2:].strip(), []))
            elif commands:
                assert commands[-1].expected is not None
                commands[-1].expected.append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            commands.append(Command(number, line.strip(), None))
    for command in commands:
        if command.expected is not None:
            while command.expected and not command.expected[-1].strip():
                command.expected.pop()
    # `echo $?` shows the exit code of the command before it.
    for before, after in zip(commands, commands[1:], strict=False):
        if after.text == "echo $?":
            before.exit_code = int((after.expected or ["0"])[0])
    return commands


def cli_argv(segment: str) -> list[str] | None:
    """The arguments of a checkpoint-flow invocation, or None for any other command."""
    words = [w for w in shlex.split(segment) if w not in ("<", "/dev/null")]
    if words[:1] == ["checkpoint-flow"]:
        return words[1:]
    if words[:3] == ["python", "-m", "checkpoint_flow"]:
        return words[3:]
    return None


def runs_the_cli(block: Block) -> bool:
    return any(
        cli_argv(segment) is not None
        for command in shell_commands(block)
        for segment in command.text.split("&&")
    )


def examples() -> list[Any]:
    params = []
    for path in DOCS:
        file = path.relative_to(ROOT).as_posix()
        chains: list[Example] = []
        for block in parse_markdown(path.read_text(encoding="utf-8"), file):
            if block.lang == "shell" and not runs_the_cli(block):
                continue
            if block.lang not in ("python", "shell"):
                continue
            if "continue" in block.directives:
                assert chains, f"{file}:{block.line}: `continue` needs an example before it"
                chains[-1].blocks.append(block)
            else:
                chains.append(Example([block]))
        for chain in chains:
            marks = []
            skip, xfail = chain.directive("skip"), chain.directive("xfail")
            if skip is not None:
                assert skip, f"{chain.name}: a skipped example says why"
                marks.append(pytest.mark.skip(reason=skip))
            if xfail is not None:
                assert xfail, f"{chain.name}: an xfail example names the bug"
                marks.append(pytest.mark.xfail(strict=True, reason=xfail))
            params.append(pytest.param(chain, id=chain.name, marks=marks))
    return params


def _environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CHECKPOINT_FLOW_KEY"}
    env.update(PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path), PYTHONUNBUFFERED="1")
    return env


def _normalized(text: str, workdir: Path) -> list[str]:
    """Output with what legitimately varies between runs replaced by placeholders."""
    text = text.replace(str(workdir), "/home/me").replace(socket.gethostname(), "vm")
    text = re.sub(r"\b[0-9a-f]{8,}\b", "<id>", text)
    text = re.sub(r"\d+", "0", text)
    return [" ".join(line.split()) for line in text.splitlines()]


def _matches(shown: list[str], actual: list[str]) -> bool:
    """Whether the actual lines are the shown ones, a line ``...`` standing for any lines."""
    pattern = "".join(
        r"(?:[^\n]*\n)*?" if line == "..." else re.escape(line) + r"\n" for line in shown
    )
    return re.fullmatch(pattern, "".join(f"{line}\n" for line in actual)) is not None


def _run_python(blocks: list[Block], workdir: Path, env: dict[str, str], endpoint: str) -> None:
    spec = []
    for block in blocks:
        setup, setup_line = block.directives.get("setup", ("", 0))
        after, after_line = block.directives.get("after", ("", 0))
        spec.append(
            {
                "file": block.file,
                "line": block.line,
                "code": block.code.replace(S3_PLACEHOLDER, endpoint),
                "setup": setup.replace(S3_PLACEHOLDER, endpoint),
                "setup_line": setup_line,
                "after": after.replace(S3_PLACEHOLDER, endpoint),
                "after_line": after_line,
                "raises": block.directives.get("raises", (None, 0))[0],
            }
        )
    spec_file = workdir.parent / f"{workdir.name}-spec.json"
    spec_file.write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(spec_file)], cwd=workdir, env=env,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, f"{blocks[0].file}:{blocks[0].line}\n{done.stdout}{done.stderr}"


def _run_shell(block: Block, workdir: Path, env: dict[str, str], endpoint: str) -> None:
    setup = block.directives.get("setup")
    if setup is not None:
        hidden = Block(block.file, setup[1], "python", setup[0])
        _run_python([hidden], workdir, env, endpoint)
    for command in shell_commands(block):
        if command.text == "echo $?":
            continue
        outputs = []
        ran = False
        code = 0
        for segment in command.text.replace(S3_PLACEHOLDER, endpoint).split("&&"):
            argv = cli_argv(segment)
            if argv is None:
                continue  # installing, running the test suite: not this test's business
            ran = True
            done = subprocess.run(
                [sys.executable, "-m", "checkpoint_flow", *argv], cwd=workdir, env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, timeout=300, check=False,
            )
            outputs.append(done.stdout)
            code = done.returncode
            if code:
                break
        where = f"{block.file}:{command.line}: {command.text}"
        if command.expected is not None:
            assert ran, f"{where}: a transcript shows only commands this test can run"
        if not ran:
            continue
        output = "".join(outputs)
        assert code == command.exit_code, f"{where}\nexit {code}, documented {command.exit_code}" \
            f"\n{output}"
        if command.expected is not None:
            shown = _normalized("\n".join(command.expected), workdir)
            actual = _normalized(output, workdir)
            assert _matches(shown, actual), (
                f"{where}\nthe documentation shows:\n" + "\n".join(command.expected)
                + "\n\nthe command printed:\n" + output
            )


@pytest.mark.parametrize("example", examples())
def test_documented_example_runs_as_written(
    example: Example, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = _environment(tmp_path)
    endpoint = S3_PLACEHOLDER
    bucket = example.directive("s3")
    fs = None
    if bucket is not None:
        import s3fs

        _server, endpoint = request.getfixturevalue("s3_server")
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                   AWS_DEFAULT_REGION="us-east-1")
        fs = s3fs.S3FileSystem(key="testing", secret="testing", skip_instance_cache=True,
                               client_kwargs={"endpoint_url": endpoint})
        fs.mkdir(bucket)
    try:
        pending: list[Block] = []
        for block in example.blocks:
            if block.lang == "python":
                pending.append(block)
                continue
            if pending:
                _run_python(pending, workdir, env, endpoint)
                pending = []
            _run_shell(block, workdir, env, endpoint)
        if pending:
            _run_python(pending, workdir, env, endpoint)
    finally:
        if fs is not None:
            fs.rm(bucket, recursive=True)


# -- the harness itself -------------------------------------------------------------------------

SAMPLE = """\
Text.

<!-- setup:
def fake():
    return 41
-->
```python
value = fake() + 1
```

<!-- continue -->
<!-- raises: KeyError -->
```python
{}["missing"]
```

<!-- skip: shows an interface only -->
```python
class Nothing(Protocol): ...
```

```text
checkpoint-flow ls LOCATION
```

```
$ checkpoint-flow ls nowhere
checkpoint-flow: error: no such location: /home/me/nowhere
$ echo $?
1
```
"""


def test_the_harness_reads_directives_blocks_and_transcripts() -> None:
    blocks = parse_markdown(SAMPLE, "sample.md")
    assert [(b.lang, b.line) for b in blocks] == [
        ("python", 8), ("python", 14), ("python", 19), ("text", 23), ("shell", 27),
    ]
    assert blocks[0].directives["setup"] == ("def fake():\n    return 41", 4)
    assert set(blocks[1].directives) == {"continue", "raises"}
    assert blocks[2].directives["skip"][0] == "shows an interface only"
    (command, echo) = shell_commands(blocks[4])
    assert command.expected == ["checkpoint-flow: error: no such location: /home/me/nowhere"]
    assert command.exit_code == 1 and echo.text == "echo $?"
    assert cli_argv("python -m checkpoint_flow demo") == ["demo"]
    assert cli_argv("checkpoint-flow reset run < /dev/null") == ["reset", "run"]
    assert cli_argv("python -m pip install .") is None


def test_the_harness_fails_an_example_that_does_not_do_what_it_says(tmp_path: Path) -> None:
    blocks = parse_markdown(SAMPLE, "sample.md")
    workdir = tmp_path / "w"
    workdir.mkdir()
    env = _environment(tmp_path)
    _run_python(blocks[:2], workdir, env, S3_PLACEHOLDER)  # the documented KeyError is expected
    with pytest.raises(AssertionError, match="raises KeyError, but it ran without an error"):
        _run_python([Block("sample.md", 8, "python", "x = 1", {"raises": ("KeyError", 0)})],
                    workdir, env, S3_PLACEHOLDER)
    with pytest.raises(AssertionError, match="NameError"):
        _run_python([Block("sample.md", 8, "python", "glob.glob('*')")], workdir, env,
                    S3_PLACEHOLDER)


def test_shown_output_is_compared_line_by_line() -> None:
    workdir = Path("/tmp/pytest-of-me/run7")
    actual = _normalized(
        f"checkpoint flow at {workdir}/run\n\n  #  step  status\n  0  prepare  done  0.03s\n",
        workdir,
    )
    assert _matches(_normalized("checkpoint flow at /home/me/run\n...", workdir), actual)
    assert _matches(
        _normalized("checkpoint flow at /home/me/run\n\n# step status\n1 prepare done 0.02s",
                    workdir),
        actual,
    )
    assert not _matches(_normalized("checkpoint flow at /home/me/run\n\n# step status\n"
                                    "1 prepare failed 0.02s", workdir), actual)
    assert not _matches(_normalized("checkpoint flow at /home/me/run", workdir), actual)
