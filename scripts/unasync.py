#!/usr/bin/env python3
"""Generate the sync twins from their async source (as encode/httpcore's ``scripts/unasync.py``).

The async code is the one source. Each sync file is the async file rewritten by the table
below, with a header saying so; nobody edits a generated file by hand:

    python scripts/unasync.py           # write the sync files after editing an async source
    python scripts/unasync.py --check   # CI (.ci/run): exit 1 naming the first stale line

Every rule is a regular expression applied, in order, to the whole text (``re.MULTILINE``);
word boundaries keep ``aclose`` from matching inside ``maclose``. The rules:

    async source                         sync twin
    ----------------------------------   ----------------------------------
    import anyio (its whole line)        (removed: the sync code sleeps with time.sleep)
    import anyio  # sync twin: import time
                                         import time (first of the standard library's imports)
    from .ledger_view import ... (line)  (removed: the sync guard calls the ledger itself)
    AsyncLedgerView(x)                   x
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
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FILES: list[tuple[str, str]] = [
    ("src/kling_cost/kling/async_client.py", "src/kling_cost/kling/client.py"),
    ("src/kling_cost/guard/async_settle.py", "src/kling_cost/guard/settle.py"),
    ("src/kling_cost/guard/async_flight.py", "src/kling_cost/guard/flight.py"),
    ("src/kling_cost/guard/async_client.py", "src/kling_cost/guard/client.py"),
]
"""(async source, generated sync file), relative to the repository root."""

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
    (r"\bAsyncLedgerView\(([\w.]+)\)", r"\1"),
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
    problems = []
    for source_name, target_name in FILES:
        source, target = root / source_name, root / target_name
        expected = generate(source)
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


def write(root: Path) -> list[str]:
    """Write every generated file that changed; returns their names."""
    written = []
    for source_name, target_name in FILES:
        target = root / target_name
        text = generate(root / source_name)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            written.append(target_name)
    return written


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
    for name in write(args.root):
        print(f"unasync: wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
