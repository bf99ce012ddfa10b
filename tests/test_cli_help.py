"""Help that shows what to type, values checked without pydantic, and the missing-credentials
error in the terms of the command line (issue 12, item 6)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from kling_cost import MissingCredentials
from kling_cost.cli import app
from kling_cost.cli._help import HELP_FILE, live_help, rendered_help, terminal_columns
from kling_cost.kling import resolve_auth

runner = CliRunner()
TYPE_TAG = re.compile(r"<(?:bool|str|int|float|path|file|list|tuple|text)[^>]*>", re.I)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _paths(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name in group.list_commands(None):
        command = group.get_command(None, name)
        out.append((*prefix, name))
        if hasattr(command, "list_commands"):
            out.extend(_paths(command, (*prefix, name)))
    return out


PATHS = [(), *_paths(typer.main.get_command(app))]


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) or "kling-cost" for p in PATHS])
def test_help_has_no_python_type_tags_and_no_braced_arguments(path: tuple[str, ...]) -> None:
    code, out, _ = run(*path, "--help")
    assert code == 0
    assert not TYPE_TAG.search(out), out
    usage = out.splitlines()[0]
    assert usage.startswith(f"Usage: kling-cost {' '.join(path)}".rstrip()), usage
    assert "{" not in usage and "}" not in usage, usage
    assert re.search(r"^\s+--help\s{2,}Show this message and exit\.$", out, re.M), out


def test_flags_show_no_type_and_options_show_what_they_take() -> None:
    code, out, _ = run("estimate", "--help")
    assert code == 0
    for flag, help_start in (
        ("--json", "Print JSON"),
        ("--image-input", "Image generation"),
        ("--help", "Show"),
    ):
        assert re.search(rf"^\s+{flag}\s{{2,}}{help_start}", out, re.M), (flag, out)
    assert re.search(r"^\s+--audio / --no-audio\s{2,}Generate sound", out, re.M), out
    for option, metavar in (
        ("--model", "TEXT"),
        ("--duration", "INTEGER"),
        ("--count", "INTEGER"),
        ("--catalog", "CATALOG"),
        ("--as-of", "DATE"),
    ):
        assert re.search(rf"^\s+{option} {metavar}\s", out, re.M), (option, out)
    assert "[default: 1; x>=1]" in out  # --count's range is still shown
    code, out, _ = run("batch", "run", "--help")
    assert code == 0
    for option, metavar in (
        ("--results", "PATH"),
        ("--poll", "NUMBER"),
        ("--scope", "TEXT"),
        ("--ledger", "URL"),
    ):
        assert re.search(rf"^\s+{option} {metavar}\s", out, re.M), (option, out)
    assert re.search(r"^\s+-y, --yes\s{2,}Run without asking", out, re.M), out


@pytest.mark.parametrize(
    ("path", "usage"),
    [
        (("batch", "run"), "Usage: kling-cost batch run [OPTIONS] FILE"),
        (("batch", "plan"), "Usage: kling-cost batch plan [OPTIONS] FILE"),
        (("budget", "set"), "Usage: kling-cost budget set [OPTIONS] SCOPE [LIMIT]"),
        (("budget", "show"), "Usage: kling-cost budget show [OPTIONS] SCOPE"),
        (("pricing", "validate"), "Usage: kling-cost pricing validate [OPTIONS] FILE"),
        (("alerts", "test"), "Usage: kling-cost alerts test [OPTIONS] SINK_URL"),
        ((), "Usage: kling-cost [OPTIONS] COMMAND [ARGS]..."),
    ],
)
def test_usage_lines_name_the_arguments(path: tuple[str, ...], usage: str) -> None:
    code, out, _ = run(*path, "--help")
    assert code == 0 and out.splitlines()[0] == usage
    arguments = [a.strip("[]") for a in usage.split("[OPTIONS]")[1].split()] if path else []
    section = out.split("Arguments:\n")[1].split("\n\n")[0] if arguments else ""
    assert re.findall(r"^  (\S+)\s{2,}\S", section, re.M) == arguments, out


def test_the_list_of_commands_shows_each_ones_help() -> None:
    code, out, _ = run("--help")
    assert code == 0
    listed = re.findall(r"^  ([a-z]+)\s{2,}(\S.*)$", out.split("Commands:")[1], re.M)
    assert [name for name, _ in listed] == list(typer.main.get_command(app).list_commands(None))  # type: ignore[attr-defined]
    assert dict(listed)["estimate"] == "Estimate what a request will cost, before anything is sent."
    assert dict(listed)["batch"] == "Plan and run batches of generations within budget."


def test_an_unknown_command_is_a_usage_error_with_suggestions() -> None:
    code, _, err = run("estimat")
    assert code == 2 and "No such command 'estimat'" in err and "'estimate'" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["estimate", "--count", "0"], "Input should be greater than or equal to 1"),
        (["estimate", "--count", "abc"], "'abc' is not a whole number"),
        (["estimate", "--count", "2.5"], "is not a whole number"),
        (["estimate", "--duration", "five"], "'five' is not a whole number"),
        (["simulate", "--failure-rate", "2"], "Input should be less than or equal to 1"),
        (["simulate", "--task-seconds", "nan"], "is not a finite number"),
        (["alerts", "deliver", "--interval", "soon"], "'soon' is not a number"),
    ],
)
def test_bad_values_are_refused_with_the_option_named(args: list[str], message: str) -> None:
    code, out, err = run(*args)
    assert code == 2 and message in err and f"Invalid value for '{args[-2]}'" in err, err
    assert out == ""


def test_good_values_are_converted() -> None:
    code, out, _ = run("estimate", "--model", "kling-v2-6", "--count", " 2.0 ", "--duration", "10", "--json")
    assert code == 0 and '"count": 2' in out and '"duration": 10' in out


def test_missing_credentials_name_the_variables_a_shell_sets(ledger_url: str) -> None:
    for command in (["settle"], ["settle", "--json"]):
        code, _, err = run(*command, "--ledger", ledger_url)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith("error: no Kling credentials: set KLING_ACCESS_KEY and KLING_SECRET_KEY")
        assert "KLING_API_KEY" in err and "--base-url" in err
        assert "access_key" not in err and "api_key" not in err  # the library's argument names


def test_batch_run_without_credentials_says_what_to_set(ledger_url: str, tmp_path: Path) -> None:
    batch = tmp_path / "prompts.txt"
    batch.write_text("a fox in snow\n")
    code, _, err = run("batch", "run", str(batch), "--yes", "--ledger", ledger_url)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "set KLING_ACCESS_KEY and KLING_SECRET_KEY (or KLING_API_KEY)" in err
    assert "access_key" not in err


@pytest.mark.parametrize(
    ("variable", "other"),
    [("KLING_ACCESS_KEY", "KLING_SECRET_KEY"), ("KLING_SECRET_KEY", "KLING_ACCESS_KEY")],
)
def test_half_a_key_pair_names_the_other_half(
    variable: str, other: str, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "given")
    code, _, err = run("settle", "--ledger", ledger_url)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"error: {variable} is set but {other} is not: set {other} too" in err


def test_the_library_keeps_its_own_wording_and_says_what_is_missing() -> None:
    with pytest.raises(MissingCredentials, match="pass access_key and secret_key") as caught:
        resolve_auth()
    assert caught.value.missing == ("KLING_ACCESS_KEY", "KLING_SECRET_KEY")
    with pytest.raises(MissingCredentials) as caught:
        resolve_auth(access_key="ak")
    assert caught.value.missing == ("KLING_SECRET_KEY",)


@pytest.mark.parametrize(
    "args",
    [
        ["estimate", "--duration", "abc"],
        ["estimate", "--bogus"],
        ["no-such-command"],
        ["budget", "set", "account"],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str]) -> None:
    """Click's usage block (Usage / Try / blank / Error) is one line like every other error."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "kling_cost", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--help" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


# --- `kling-cost --help` from the stored text (cli/_help.py) -------------------------------

SCRIPT = Path(sys.executable).with_name("kling-cost")
TYPER_HELP = "import sys\nfrom kling_cost.cli._app import app\napp(sys.argv[1:], prog_name='kling-cost')\n"


def _script(*argv: str, columns: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = columns
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-c", MAIN_AS_SCRIPT]
    return subprocess.run([*command, *argv], capture_output=True, text=True, env=env, timeout=60, check=False)


def _typer(*argv: str, columns: str) -> str:
    env = {**os.environ, "COLUMNS": columns}
    proc = subprocess.run(
        [sys.executable, "-c", TYPER_HELP, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return proc.stdout


MAIN_AS_SCRIPT = "import sys\nsys.argv[0] = 'kling-cost'\nfrom kling_cost.cli import main\nmain()\n"


def test_stored_root_help_is_what_typer_renders() -> None:
    assert HELP_FILE.read_text(encoding="utf-8") == live_help(), (
        "the stored root help is out of date: run python -m kling_cost.cli._help --write"
    )


@pytest.mark.parametrize("columns", [None, "80", "200"])
def test_root_help_on_a_wide_terminal_is_the_stored_text_and_typers(columns: str | None) -> None:
    proc = _script("--help", columns=columns)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == HELP_FILE.read_text(encoding="utf-8")
    assert proc.stdout == _typer("--help", columns=columns or "80")


def test_root_help_on_a_narrow_terminal_is_rendered_by_typer() -> None:
    proc = _script("--help", columns="60")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _typer("--help", columns="60")
    assert proc.stdout != HELP_FILE.read_text(encoding="utf-8")  # wrapped at 58, not 78
    assert max(len(line) for line in proc.stdout.splitlines()) <= 60


def test_only_exactly_root_help_takes_the_stored_text() -> None:
    assert rendered_help(["/x/kling-cost", "--help"]) == HELP_FILE.read_text(encoding="utf-8")
    for argv in (
        ["/x/kling-cost"],
        ["/x/kling-cost", "estimate", "--help"],
        ["/x/kling-cost", "--help", "extra"],
        ["/x/kling_cost/__main__.py", "--help"],  # python -m kling_cost: usage says so
    ):
        assert rendered_help(argv) is None, argv


@pytest.mark.parametrize(("value", "expected"), [("100", 100), ("0", 80), ("-3", 80), ("wide", 80)])
def test_terminal_columns_reads_columns_as_shutil_does(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: int
) -> None:
    monkeypatch.setenv("COLUMNS", value)
    if expected == 80:  # no usable $COLUMNS: the terminal, else 80, exactly as shutil says
        expected = shutil.get_terminal_size().columns
    assert terminal_columns() == expected


def _help_to(stdout: str, columns: str) -> tuple[int, str]:
    """``kling-cost --help`` with its stdout ``closed``, a pipe whose reader is ``gone``, or
    ``full`` (/dev/full): exit code and stderr. COLUMNS=100 takes the stored text, 60 makes
    Typer render the help."""
    env = {**os.environ, "COLUMNS": columns}
    env.pop("KLING_COST_DEBUG", None)
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-c", MAIN_AS_SCRIPT]
    with contextlib.ExitStack() as stack:
        target: int | None = None
        if stdout == "closed":  # as a shell's `kling-cost --help >&-`
            command = ["/bin/sh", "-c", 'exec "$@" >&-', "sh", *command]
        elif stdout == "gone":  # the reader of the pipe has exited
            read, target = os.pipe()
            os.close(read)
            stack.callback(os.close, target)
        else:
            target = stack.enter_context(open("/dev/full", "wb")).fileno()
        proc = subprocess.run(
            [*command, "--help"],
            stdout=target,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    return proc.returncode, proc.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("stdout", ["closed", "gone", "full"])
def test_root_help_fails_on_stdout_as_typer_does(stdout: str) -> None:
    """The stored text and Typer's rendering end alike when stdout cannot take the help: no
    stdout (``>&-``), nothing and exit 0; a reader gone (``| head -1`` before it read), exit 1
    and no traceback; a full disk, the CLI's one line ``internal error: ...``, exit 1."""
    stored, typer_rendered = _help_to(stdout, "100"), _help_to(stdout, "60")
    assert stored == typer_rendered
    code, err = stored
    assert "Traceback" not in err
    assert (code, err) == {"closed": (0, ""), "gone": (1, "")}.get(stdout, (1, err))
    if stdout == "full":
        assert err.startswith("internal error: OSError") and len(err.splitlines()) == 1, err


def test_batch_run_help_says_how_to_stop_it() -> None:
    """README: SIGTERM (a service manager) is the same two-step stop as Ctrl-C, exit 143; the
    command's own help says so too."""
    code, out, _ = run("batch", "run", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "Ctrl-C" in text and "(exit 130)" in text and "SIGTERM" in text and "(exit 143)" in text, out
