#!/usr/bin/env python3
"""Generate the sync twins from their async source (as encode/httpcore's ``scripts/unasync.py``).

The async code is the one source. Each sync file is the async file rewritten by the table
below, with a header saying so; nobody edits a generated file by hand:

    python scripts/unasync.py           # write the sync files after editing an async source
    python scripts/unasync.py --check   # CI (.ci/run): exit 1 naming the first stale line

Both modes also fail (exit 1, naming file and line) when a generated file would keep code only
the async side has (``async``, ``await``, ``anyio``, an ``Async...`` name: a rule is missing),
when an ``async_*.py`` module of the package is not in :data:`FILES` (a new source nobody
generates), or when a file says it is generated but is not in :data:`FILES` (an orphan).

Every rule is a regular expression applied, in order, to the whole text (``re.MULTILINE``);
word boundaries keep ``aclose`` from matching inside ``maclose``. The rules:

    async source                         sync twin
    ----------------------------------   ----------------------------------
    import anyio (its whole line)        (removed: the sync code sleeps with time.sleep)
    import anyio  # sync twin: import time
                                         import time (first of the standard library's imports)
    from .ledger_view import ... (line)  (removed: the sync guard calls the ledger itself)
    AsyncLedgerView(x[, shielded=True])  x
    async def / async with / async for   def / with / for
    await <expr>                         <expr>
    __aenter__ __aexit__                 __enter__ __exit__
    __aiter__ __anext__                  __iter__ __next__
    StopAsyncIteration                   StopIteration
    AsyncIterator AsyncIterable          Iterator Iterable
    Iterator, Iterable (an import list)  Iterable, Iterator   (kept in isort's order)
    asynccontextmanager                  contextmanager
    aclose() aread()                     close() read()
    aiter_bytes/_text/_lines/_raw        iter_bytes/_text/_lines/_raw   (httpx streams)
    httpx.AsyncClient                    httpx.Client
    httpx.AsyncHTTPTransport             httpx.HTTPTransport
    anyio.sleep                          time.sleep
    AsyncKlingClient                     KlingClient
    AsyncCostAwareClient                 CostAwareClient
    AsyncSettler                         Settler
    AsyncSingleFlight                    SingleFlight
    .async_client .async_settle          .client .settle   (module paths; .async_flight too)

Where the twins genuinely differ (a name, an import), add a rule here, never an edit in a
generated file. The generated files must pass ``ruff format --check`` as generated: where
dropping ``await`` lets a wrapped call fit on one line, keep a trailing comma in the async
source so the formatter keeps both wrapped. Standard library only.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FILES: list[tuple[str, str]] = [
    ("src/kling_cost/kling/async_client.py", "src/kling_cost/kling/client.py"),
    ("src/kling_cost/guard/async_settle.py", "src/kling_cost/guard/settle.py"),
    ("src/kling_cost/guard/async_flight.py", "src/kling_cost/guard/flight.py"),
    ("src/kling_cost/guard/async_client.py", "src/kling_cost/guard/client.py"),
]
"""(async source, generated sync file), relative to the repository root."""

PACKAGE = "src/kling_cost"
ASYNC_ONLY: list[str] = []
"""``async_*.py`` modules of the package that have no sync twin (none today)."""
ASYNC_NAMES = re.compile(r"^(async|await|anyio|Async[A-Z]\w*|aclose|__a(enter|exit|iter|next)__)$")
"""Names that only async code has: one left in a generated file means a rule is missing."""

SUBS: list[tuple[str, str]] = [
    # a module that imports time only to sleep: its sync twin imports time (first in the
    # standard library's group, where isort puts it) instead of anyio
    (
        r"^from __future__ import annotations\n\n(?=(?:.*\n)*?import anyio  # sync twin: import time\n)",
        "from __future__ import annotations\n\nimport time\n",
    ),
    (r"\n\nimport anyio  # sync twin: import time\n\n", "\n\n"),
    # lines only the async code needs (an import group of its own goes with its blank line)
    (r"\n\nimport anyio\n\n", "\n\n"),
    (r"^import anyio\n", ""),
    (r"^from \.ledger_view import AsyncLedgerView\n", ""),
    # the async guard awaits a view of the ledger; the sync guard calls the ledger itself
    (r"\bAsyncLedgerView\(([\w.]+)(?:, shielded=True)?\)", r"\1"),
    # keywords
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\basync for\b", "for"),
    (r"\bawait ", ""),
    # protocols, built-ins and typing
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\b__aiter__\b", "__iter__"),
    (r"\b__anext__\b", "__next__"),
    (r"\bStopAsyncIteration\b", "StopIteration"),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bAsyncIterable\b", "Iterable"),
    (r"\bIterator, Iterable\b", "Iterable, Iterator"),
    (r"\basynccontextmanager\b", "contextmanager"),
    (r"\baclose\b", "close"),
    (r"\baread\b", "read"),
    (r"\baiter_(bytes|text|lines|raw)\b", r"iter_\1"),
    # libraries
    (r"\bhttpx\.AsyncClient\b", "httpx.Client"),
    (r"\bhttpx\.AsyncHTTPTransport\b", "httpx.HTTPTransport"),
    (r"\banyio\.sleep\b", "time.sleep"),
    # our public names and modules
    (r"\bAsyncKlingClient\b", "KlingClient"),
    (r"\bAsyncCostAwareClient\b", "CostAwareClient"),
    (r"\bAsyncSettler\b", "Settler"),
    (r"\bAsyncSingleFlight\b", "SingleFlight"),
    (r"\.async_(client|settle|flight)\b", r".\1"),
]

COMPILED = [(re.compile(pattern, re.MULTILINE), repl) for pattern, repl in SUBS]

HEADER = (
    "# GENERATED by `python scripts/unasync.py` from {source}: do not edit this file.\n"
    "# Edit {source}, then run the script (CI runs `python scripts/unasync.py --check`).\n"
)


def unasync(text: str) -> str:
    """The sync twin of async source ``text`` (without the header)."""
    for regex, repl in COMPILED:
        text = regex.sub(repl, text)
    return text


def generate(source: Path) -> str:
    """The whole generated file for ``source``: the header, then the rewritten text."""
    return HEADER.format(source=source.name) + unasync(source.read_text(encoding="utf-8"))


def leftovers(target_name: str, text: str) -> list[str]:
    """One message per line of generated ``text`` whose code (not its comments or strings)
    still names something only the async side has."""
    found = []
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    for token in tokens:
        if token.type == tokenize.NAME and ASYNC_NAMES.match(token.string):
            found.append(
                f"{target_name}:{token.start[0]}: {token.string!r} is async-only code left in the sync twin; "
                "add a rule to SUBS in scripts/unasync.py"
            )
    return found


def unregistered(root: Path) -> list[str]:
    """Async modules nobody generates a twin of, and generated files nobody generates."""
    sources = {source for source, _ in FILES} | set(ASYNC_ONLY)
    targets = {target for _, target in FILES}
    found = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        name = path.relative_to(root).as_posix()
        if path.name.startswith("async_") and name not in sources:
            found.append(
                f"{name}: an async module without a generated sync twin; add it to FILES in "
                "scripts/unasync.py (or to ASYNC_ONLY if it has no twin)"
            )
        elif name not in targets and path.read_text(encoding="utf-8").startswith(HEADER[:30]):
            found.append(f"{name}: says it is generated, but FILES in scripts/unasync.py has no source of it")
    return found


def first_difference(expected: str, actual: str) -> tuple[int, str, str]:
    """(1-based line number, expected line, actual line) of the first line that differs."""
    want, have = expected.splitlines(), actual.splitlines()
    for number in range(max(len(want), len(have))):
        line_want = want[number] if number < len(want) else "<end of file>"
        line_have = have[number] if number < len(have) else "<end of file>"
        if line_want != line_have:
            return number + 1, line_want, line_have
    return len(want) + 1, "<end of file>", "<newline at end of file differs>"


def check(root: Path) -> list[str]:
    """One message per generated file that is missing or differs from what its source gives."""
    problems = unregistered(root)
    for source_name, target_name in FILES:
        source, target = root / source_name, root / target_name
        expected = generate(source)
        problems += leftovers(target_name, expected)
        if not target.exists():
            problems.append(f"{target_name}: missing (generated from {source_name})")
            continue
        actual = target.read_text(encoding="utf-8")
        if actual != expected:
            line, want, have = first_difference(expected, actual)
            problems.append(
                f"{target_name}:{line}: out of date with {source_name}\n"
                f"    expected: {want!r}\n"
                f"    found:    {have!r}"
            )
    return problems


def write(root: Path) -> tuple[list[str], list[str]]:
    """Write every generated file that changed; returns their names, and the problems
    :func:`check` would report that writing cannot fix (nothing is written then)."""
    problems = unregistered(root)
    texts = {target: generate(root / source) for source, target in FILES}
    for target_name, text in texts.items():
        problems += leftovers(target_name, text)
    if problems:
        return [], problems
    written = []
    for target_name, text in texts.items():
        target = root / target_name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            written.append(target_name)
    return written, []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the sync twins from their async source.")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a generated file is out of date"
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this one)")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.root)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `python scripts/unasync.py` to regenerate", file=sys.stderr)
            return 1
        print(f"unasync: {len(FILES)} generated files up to date")
        return 0
    written, problems = write(args.root)
    for problem in problems:
        print(problem, file=sys.stderr)
    for name in written:
        print(f"unasync: wrote {name}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
