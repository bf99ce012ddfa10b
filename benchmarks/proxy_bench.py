"""The budget proxy's added latency and throughput, against Kling reached directly, in the same run.

Run from the repository root, in the project's virtualenv::

    python benchmarks/proxy_bench.py [--quick] [--seconds N] [--rounds N] [--clients N]
        [--ledger-backend sqlite|postgres] [--auth api-key|jwt] [--proxy-workers N]
        [--client-procs N] [--as-shipped] [--py-spy FILE] [--json]

Setup: the simulator (``kling-cost simulate``) is Kling, in its own process on loopback, with
instant tasks (``--task-seconds 0``), no failures, a pack and a concurrency limit it never
runs out of. The proxy (``kling-cost proxy``, ``--proxy-workers`` processes) is in front of
it, on a fresh ledger (a SQLite file in a temporary directory, or with ``--ledger-backend
postgres`` a fresh schema ``bench_<random>`` on ``$KLING_COST_TEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``, dropped at the end) holding one virtual key with
a budget of 10^9 units a day on its scope ``key:bench``; the background settler is held off
(``--settle-interval 3600``). Both servers run through their CLI code, with one change unless
``--as-shipped``: see ``_LAUNCHER`` (TCP_NODELAY on the listening socket).

The load: legacy creates (``POST /v1/videos/text2video``, kling-v2-6 std 5 s) and queries
(``GET /v1/videos/text2video/<task_id>``), sent by a minimal HTTP/1.1 keep-alive client on
raw asyncio streams (httpx costs several times more CPU per request, and on a small machine
the load generator must not be what is measured), in ``--client-procs`` processes.

* **direct**: to the simulator, with its real API key (``--auth jwt``: a JWT signed with its
  AK/SK); queries of tasks created directly;
* **proxied**: to the proxy, with the virtual key's API key (``--auth jwt``: a JWT signed with
  the virtual AK/SK); queries of tasks the same key created through the proxy. The proxy calls
  the simulator with the same kind of credential the direct client uses (its environment has
  only ``KLING_API_KEY``; with ``--auth jwt`` also ``KLING_ACCESS_KEY``/``KLING_SECRET_KEY``,
  and it signs a JWT), so the simulator's own work per request is the same in both runs.

A task is instant, so Kling's answer to the create already shows it ended: the proxy settles
it inside the create (reserve, send, attach and commit), and the queries that follow find it
settled (they still look up its owner and its reservation). The simulator looks at every task
it holds on every request, so its cost grows with the tasks made; each block (one concurrency:
creates, then queries) therefore starts on a freshly started simulator.

Each round runs a block with 1 client (sequential: the cleanest view of the per-request cost)
and one with ``--clients`` concurrent clients (default 32): creates for ``--seconds`` on each
target, then queries of the tasks just created for ``--seconds`` on each target. The direct and
proxied phases alternate, their order flipping every round, so drift hits both alike; each
client's first request is an untimed warm-up, and a warm-up of both targets precedes round 1.
Latency is per request (``time.perf_counter_ns`` around the write and the read); throughput is
a phase's requests over its duration, summed over rounds. On Linux the CPU time each server's
processes used during the phases is read from ``/proc`` and shown per request.

Reported: direct and proxied p50/p99, the added latency (proxied - direct, p50 and p99) for
creates and queries, throughput proxied/direct, and CPU per request. Goals (issue 15): added
p50 <= 2 ms for queries and <= 5 ms for creates, added p99 <= 15 ms (judged on the sequential
rows, which measure what the proxy adds to one request; under saturating load latency is
clients / throughput, which the throughput goal covers), throughput >= 0.8 x direct at 32
clients. For comparison, LiteLLM's measured overhead is about 4 ms median, Bifrost's
independent figure 0.4-0.6 ms. With few CPUs note that the proxied run has one more busy
process (the proxy) sharing them than the direct run; the output shows the CPU count and the
load average, and warns when other work shared the machine.

Any answer other than HTTP 200 with ``code`` 0 is an error: the run reports it and exits 1.
``--py-spy FILE`` samples the proxy with py-spy (``pip install py-spy``) for the whole run and
writes its collapsed stacks to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from multiprocessing import get_context
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

CREATE_PATH = "/v1/videos/text2video"
CREATE_BODY = json.dumps(
    {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "a lighthouse at dusk"},
    separators=(",", ":"),
).encode()
KEY_NAME = "bench"
KEY_BUDGET = Decimal(10**9)
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 60.0
START_LEAD_S = 0.3
NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
QUERY_P50_GOAL_MS = 2.0
CREATE_P50_GOAL_MS = 5.0
P99_GOAL_MS = 15.0
THROUGHPUT_GOAL = 0.8
BUSY_LOAD = 0.5  # a 1-minute load average above this before the run: other work on the machine

Kind = Literal["create", "query"]
KINDS: tuple[Kind, ...] = ("create", "query")
TargetName = Literal["direct", "proxied"]
TARGETS: tuple[TargetName, ...] = ("direct", "proxied")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the load generator (runs in worker processes; everything here is pickled) -------------------


@dataclass(frozen=True)
class Target:
    name: TargetName
    port: int
    api_key: str = ""
    access_key: str = ""
    secret_key: str = ""

    def authorization(self) -> str:
        if self.api_key:
            return f"Bearer {self.api_key}"
        from kling_cost.kling.auth import JWTAuth

        return JWTAuth(self.access_key, self.secret_key).authorization()


@dataclass(frozen=True)
class Job:
    """One worker process's share of a phase."""

    target: Target
    kind: Kind
    clients: int
    seconds: float
    start_at: float  # time.time() at which every worker starts
    ids: tuple[str, ...] = ()  # queries: the tasks to query (this worker's share)


@dataclass(frozen=True)
class Outcome:
    requests: int = 0
    elapsed_ns: int = 0
    latencies_ns: tuple[int, ...] = ()
    created: tuple[str, ...] = ()
    errors: int = 0
    first_error: str = ""


class BenchError(RuntimeError):
    """A benchmark that cannot run (a server that does not start, a broken answer)."""


class Connection:
    """One keep-alive HTTP/1.1 connection: the least a client can do per request."""

    def __init__(self, port: int, authorization: str) -> None:
        self.port = port
        self.authorization = authorization
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(HTTP status, body); (0, what happened) when the connection broke (it is closed)."""
        try:
            return await self._request(method, path, body)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            await self.close()
            return 0, f"{method} {path}: connection broke: {type(exc).__name__}: {exc}".encode()

    async def _request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nAuthorization: {self.authorization}\r\n"
        )
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
            elif name == "transfer-encoding":
                raise BenchError(f"unexpected Transfer-Encoding: {value.strip()}")
        content = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, content

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def _answer(status: int, content: bytes, kind: Kind) -> tuple[str | None, str]:
    """(task id of a create, error text or '')."""
    if status == 0:
        return None, content.decode(errors="replace")
    try:
        doc = json.loads(content)
    except ValueError:
        return None, f"HTTP {status}, not JSON: {content[:200]!r}"
    if status != 200 or not isinstance(doc, dict) or doc.get("code") != 0:
        return None, f"HTTP {status}: {content[:300].decode(errors='replace')}"
    if kind != "create":
        return None, ""
    data = doc.get("data")
    ident = data.get("task_id") if isinstance(data, dict) else None
    return (ident, "") if isinstance(ident, str) else (None, f"no task_id: {content[:300]!r}")


async def _client(job: Job, ids: Sequence[str], out: dict[str, Any]) -> None:
    conn = Connection(job.target.port, job.target.authorization())
    clock = time.perf_counter_ns
    cursor = 0

    async def once() -> None:
        nonlocal cursor
        if job.kind == "create":
            status, content = await conn.request("POST", CREATE_PATH, CREATE_BODY)
        else:
            ident = ids[cursor % len(ids)]
            cursor += 1
            status, content = await conn.request("GET", f"{CREATE_PATH}/{ident}")
        created, error = _answer(status, content, job.kind)
        if created is not None:
            out["created"].append(created)
        if error:
            out["errors"] += 1
            out["first_error"] = out["first_error"] or error

    try:
        await once()  # warm the connection (for creates: one more task for the pool)
        delay = job.start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        deadline = clock() + int(job.seconds * NS_PER_S)
        latencies = out["latencies"]
        while clock() < deadline:
            before = clock()
            await once()
            latencies.append(clock() - before)
    finally:
        await conn.close()


async def _phase(job: Job) -> Outcome:
    out: dict[str, Any] = {"latencies": [], "created": [], "errors": 0, "first_error": ""}
    shares = [job.ids[i :: job.clients] for i in range(job.clients)]
    clients = [_client(job, shares[i], out) for i in range(job.clients) if job.kind == "create" or shares[i]]
    delay = job.start_at - time.time()
    started = time.perf_counter_ns() + max(0, int(delay * NS_PER_S))
    await asyncio.gather(*clients)
    return Outcome(
        requests=len(out["latencies"]),
        elapsed_ns=time.perf_counter_ns() - started,
        latencies_ns=tuple(out["latencies"]),
        created=tuple(out["created"]),
        errors=out["errors"],
        first_error=out["first_error"],
    )


def run_job(job: Job) -> Outcome:
    """A worker process's part of a phase (top level: the pool pickles it by name)."""
    return asyncio.run(_phase(job))


# -- figures --------------------------------------------------------------------------------------


def _percentile(ordered: Sequence[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in milliseconds."""
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index] / NS_PER_MS


def session_cpu(session: int) -> float | None:
    """CPU seconds (user + system) the living processes of ``session`` have used; None where
    there is no Linux ``/proc``."""
    root = Path("/proc")
    if not (root / "self" / "stat").exists():
        return None
    ticks = 0
    for entry in root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[3]) == session:  # fields 6, 14 and 15 of proc(5): session, utime, stime
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Tally:
    """A target's requests of one kind at one concurrency, over all rounds."""

    latencies_ns: list[int] = field(default_factory=list)
    elapsed_ns: int = 0
    errors: int = 0
    first_error: str = ""
    cpu_s: dict[str, float] = field(default_factory=dict)

    def add(self, outcomes: Sequence[Outcome], cpu_s: dict[str, float]) -> None:
        for o in outcomes:
            self.latencies_ns.extend(o.latencies_ns)
            self.errors += o.errors
            self.first_error = self.first_error or o.first_error
        self.elapsed_ns += max((o.elapsed_ns for o in outcomes), default=0)
        for server, seconds in cpu_s.items():
            self.cpu_s[server] = self.cpu_s.get(server, 0.0) + seconds

    def figures(self) -> Figures:
        ordered = sorted(self.latencies_ns)
        n = len(ordered)
        return Figures(
            requests=n,
            per_s=round(n * NS_PER_S / self.elapsed_ns, 1) if self.elapsed_ns else 0.0,
            p50_ms=round(_percentile(ordered, 0.50), 3),
            p99_ms=round(_percentile(ordered, 0.99), 3),
            errors=self.errors,
            cpu_ms_per_request={k: round(v * 1000 / n, 3) for k, v in self.cpu_s.items()} if n else {},
        )


@dataclass(frozen=True)
class Figures:
    requests: int
    per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_request: dict[str, float]
    """Per server (simulator, proxy): its CPU time over the phases / requests (Linux only)."""


@dataclass(frozen=True)
class Row:
    clients: int
    kind: Kind
    direct: Figures
    proxied: Figures

    @property
    def added_p50(self) -> float:
        return round(self.proxied.p50_ms - self.direct.p50_ms, 3)

    @property
    def added_p99(self) -> float:
        return round(self.proxied.p99_ms - self.direct.p99_ms, 3)

    @property
    def ratio(self) -> float:
        return round(self.proxied.per_s / self.direct.per_s, 3) if self.direct.per_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "kind": self.kind,
            "direct": asdict(self.direct),
            "proxied": asdict(self.proxied),
            "added_p50_ms": self.added_p50,
            "added_p99_ms": self.added_p99,
            "throughput_ratio": self.ratio,
        }


# -- the servers ----------------------------------------------------------------------------------

# ``kling-cost simulate`` and ``kling-cost proxy``, run through their own CLI code, except that the
# listening socket is re-opened from its descriptor so that its ``proto`` reads IPPROTO_TCP.
# cli/_serving.py's listen() creates it with proto 0, and asyncio sets TCP_NODELAY only on
# sockets whose proto is IPPROTO_TCP: without it every answer after the first on a keep-alive
# connection (uvicorn writes the head and the body apart) waits ~40 ms for a delayed ACK.
# ``--as-shipped`` runs the servers unchanged.
_LAUNCHER = """
import socket, sys
import kling_cost.cli._serving as serving
original = serving.listen
def listen(host, port):
    sock = original(host, port)
    if sock.proto != socket.IPPROTO_TCP:
        sock = socket.socket(fileno=sock.detach())
        sock.set_inheritable(True)
    return sock
serving.listen = listen
sys.argv = ["kling-cost", *sys.argv[1:]]
from kling_cost.cli import main
main()
"""


def _cli(fixed: bool, *args: str) -> list[str]:
    if fixed:
        return [sys.executable, "-c", _LAUNCHER, *args]
    return [sys.executable, "-m", "kling_cost", *args]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _py_spy() -> str:
    import shutil

    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise BenchError("--py-spy needs py-spy (pip install py-spy)")
    return found


class Server:
    """A server started from the CLI in its own session, which prints
    ``<banner> on http://127.0.0.1:<port>``."""

    def __init__(
        self, argv: list[str], env: dict[str, str], banner: str, log: Path, stop: int = signal.SIGTERM
    ) -> None:
        self.argv, self.env, self.banner, self.log, self.stop_signal = argv, env, banner, log, stop
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def session(self) -> int:
        """Every process of the server is in this session (start_new_session)."""
        return self.proc.pid if self.proc is not None else 0

    def start(self) -> None:
        with self.log.open("a") as err:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        self.port = self._banner_port(self.proc.stdout, deadline)
        if not self.port:
            self.stop()
            raise BenchError(f"{self.banner} did not start: {self.log.read_text()[-2000:]}")
        _wait_listening(self.port, deadline)

    def _banner_port(self, out: IO[str] | None, deadline: float) -> int:
        while out is not None and time.monotonic() < deadline:
            line = out.readline()
            if not line:
                break
            found = re.search(rf"{re.escape(self.banner)} on https?://[^:]+:(\d+)", line)
            if found:
                return int(found.group(1))
        return 0

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.killpg(proc.pid, self.stop_signal)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_listening(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listens on port {port}")


def _pg_ledger_url(server: str, schema: str) -> str:
    parts = urlsplit(server)
    rest = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "schema"]
    return urlunsplit(("postgresql", parts.netloc, parts.path, urlencode([*rest, ("schema", schema)]), ""))


@dataclass(frozen=True)
class Setup:
    direct: Target
    proxied: Target
    ledger: str
    simulator: Server
    proxy: Server


@contextmanager
def servers(args: argparse.Namespace, tmp: Path, block: str) -> Iterator[Setup]:
    """A fresh simulator, a fresh ledger with the bench key, and a proxy in front of them."""
    from kling_cost.ledger import open_ledger
    from kling_cost.proxy.keys import ENV_MASTER_KEY, Keys, MasterKey

    real_ak, real_sk = f"ak-{secrets.token_hex(8)}", secrets.token_urlsafe(24)
    real_api_key = f"sk-{secrets.token_urlsafe(24)}"
    master = secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "KLING_ACCESS_KEY": real_ak,
        "KLING_SECRET_KEY": real_sk,
        "KLING_API_KEY": real_api_key,
        ENV_MASTER_KEY: master,
        "KLING_COST_LOG_LEVEL": "warning",
    }
    env.pop("KLING_BASE_URL", None)
    proxy_env = dict(env)
    if args.auth == "api-key":  # the proxy calls Kling with what the direct client uses
        del proxy_env["KLING_ACCESS_KEY"], proxy_env["KLING_SECRET_KEY"]
    if args.ledger_backend == "postgres":
        server = os.environ.get("KLING_COST_TEST_POSTGRES_URL") or DEFAULT_PG_URL
        ledger_url = _pg_ledger_url(server, f"bench_{secrets.token_hex(4)}")
    else:
        ledger_url = f"sqlite:///{tmp / f'bench-{block}.db'}"
    fixed = not args.as_shipped
    sim_port = _free_port()
    simulator = Server(
        _cli(
            fixed,
            "simulate",
            "--port",
            str(sim_port),
            "--task-seconds",
            "0",
            "--failure-rate",
            "0",
            "--concurrency",
            "1000000",
            "--video-units",
            "1000000000",
            "--no-admin",
        ),
        env,
        "Kling simulator",
        tmp / f"simulator-{block}.log",
    )
    spy = (
        [
            _py_spy(),
            "record",
            "--format",
            "raw",
            "--rate",
            "100",
            "--subprocesses",
            "-o",
            f"{args.py_spy}.{block}",
            "--",
        ]
        if args.py_spy
        else []
    )
    proxy = Server(
        spy
        + _cli(
            fixed,
            "proxy",
            "--port",
            "0",
            "--upstream",
            f"http://{HOST}:{sim_port}",
            "--ledger",
            ledger_url,
            "--settle-interval",
            "3600",
            "--workers",
            str(args.proxy_workers),
        ),
        proxy_env,
        "kling-cost proxy",
        tmp / f"proxy-{block}.log",
        stop=signal.SIGINT if spy else signal.SIGTERM,  # py-spy writes its profile on SIGINT
    )
    with ExitStack() as stack:
        ledger = open_ledger(ledger_url)
        stack.callback(ledger.close)
        if args.ledger_backend == "postgres":
            from kling_cost.ledger.postgres import PostgresBackend

            backend = ledger.backend
            if isinstance(backend, PostgresBackend):
                stack.callback(backend.drop_schema)
        issued = Keys(ledger, MasterKey(master.encode(), ENV_MASTER_KEY)).create(KEY_NAME)
        ledger.set_budget(f"key:{KEY_NAME}", limit=KEY_BUDGET, window="day")
        stack.callback(simulator.stop)
        simulator.start()
        stack.callback(proxy.stop)
        proxy.start()
        if args.auth == "jwt":
            direct = Target("direct", sim_port, access_key=real_ak, secret_key=real_sk)
            proxied = Target(
                "proxied", proxy.port, access_key=issued.access_key, secret_key=issued.secret_key
            )
        else:
            direct = Target("direct", sim_port, api_key=real_api_key)
            proxied = Target("proxied", proxy.port, api_key=issued.api_key)
        yield Setup(direct, proxied, ledger_url, simulator, proxy)


# -- the run --------------------------------------------------------------------------------------


class Runner:
    """Blocks of phases, each block on fresh servers; the figures summed over blocks."""

    def __init__(self, args: argparse.Namespace, tmp: Path, pool: ProcessPoolExecutor) -> None:
        self.args = args
        self.tmp = tmp
        self.pool = pool
        self.procs: int = args.client_procs
        self.tallies: dict[tuple[int, Kind, TargetName], Tally] = {}

    def block(
        self, name: str, clients: int, order: Sequence[TargetName], seconds: float, record: bool
    ) -> None:
        """Creates then queries with ``clients`` clients on each target, alternating in ``order``."""
        with servers(self.args, self.tmp, name) as setup:
            phases = Phases(self, setup)
            try:
                if record:  # warm both targets up: connections, caches, the proxy's first requests
                    for target in TARGETS:
                        for kind in KINDS:
                            phases.run(target, kind, clients, min(0.5, seconds), record=False)
                for kind in KINDS:
                    for target in order:
                        progress(f"{name}: {clients} client(s), {kind} phase, {target}")
                        phases.run(target, kind, clients, seconds, record=record)
            except BenchError as exc:
                raise BenchError(f"{exc}\n{phases.logs()}") from None

    def run(self, rounds: int, seconds: float, concurrencies: Sequence[int]) -> list[Row]:
        progress("warm-up (imports, files, the ledger's first use)")
        self.block("warmup", max(concurrencies), TARGETS, min(1.0, seconds), record=False)
        for r in range(rounds):
            order = TARGETS if r % 2 == 0 else TARGETS[::-1]
            for clients in concurrencies:
                self.block(f"round{r + 1}-c{clients}", clients, order, seconds, record=True)
        rows = []
        for clients in concurrencies:
            for kind in KINDS:
                tallies = {name: self.tallies[(clients, kind, name)] for name in TARGETS}
                for name, tally in tallies.items():
                    if tally.errors:
                        raise BenchError(
                            f"{tally.errors} failed {kind}s on {name} with {clients} client(s); "
                            f"first: {tally.first_error}"
                        )
                rows.append(Row(clients, kind, tallies["direct"].figures(), tallies["proxied"].figures()))
        return rows


class Phases:
    """The phases of one block, on one setup."""

    def __init__(self, runner: Runner, setup: Setup) -> None:
        self.runner = runner
        self.setup = setup
        self.targets = {"direct": setup.direct, "proxied": setup.proxied}
        self.pools: dict[TargetName, list[str]] = {"direct": [], "proxied": []}

    def logs(self) -> str:
        """The servers' last words (their stderr)."""
        return "\n".join(
            f"-- {server.log.name}:\n{server.log.read_text()[-3000:]}"
            for server in (self.setup.simulator, self.setup.proxy)
            if server.log.exists()
        )

    def _cpu(self) -> dict[str, float | None]:
        servers = {"simulator": self.setup.simulator, "proxy": self.setup.proxy}
        return {name: session_cpu(server.session) for name, server in servers.items()}

    def run(self, name: TargetName, kind: Kind, clients: int, seconds: float, *, record: bool) -> None:
        procs = max(1, min(self.runner.procs, clients))
        split = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
        ids = self.pools[name]
        if kind == "query" and not ids:
            raise BenchError(f"no {name} task to query")
        start_at = time.time() + START_LEAD_S + 0.2 * procs
        jobs = [
            Job(self.targets[name], kind, split[i], seconds, start_at, tuple(ids[i::procs]))
            for i in range(procs)
        ]
        before = self._cpu()
        outcomes = list(self.runner.pool.map(run_job, jobs))
        after = self._cpu()
        cpu = {k: b - a for k, b in after.items() if b is not None and (a := before[k]) is not None}
        self.pools[name].extend(x for o in outcomes for x in o.created)
        if record:
            self.runner.tallies.setdefault((clients, kind, name), Tally()).add(outcomes, cpu)
            return
        errors = [o.first_error for o in outcomes if o.errors]
        if errors:
            raise BenchError(f"warm-up on {name}: {errors[0]}")


def goals(rows: Sequence[Row], clients: int) -> list[tuple[str, bool, str]]:
    def row(n: int, kind: Kind) -> Row:
        return next(r for r in rows if r.clients == n and r.kind == kind)

    out: list[tuple[str, bool, float]] = []
    p50_goals: dict[Kind, float] = {"create": CREATE_P50_GOAL_MS, "query": QUERY_P50_GOAL_MS}
    for kind, p50_goal in p50_goals.items():
        seq = row(1, kind)
        out.append(
            (f"{kind}: added p50 <= {p50_goal:g} ms (1 client)", seq.added_p50 <= p50_goal, seq.added_p50)
        )
        out.append(
            (
                f"{kind}: added p99 <= {P99_GOAL_MS:g} ms (1 client)",
                seq.added_p99 <= P99_GOAL_MS,
                seq.added_p99,
            )
        )
    for kind in KINDS:
        loaded = row(clients, kind)
        out.append(
            (
                f"{kind}: throughput >= {THROUGHPUT_GOAL:g} x direct ({clients} clients)",
                loaded.ratio >= THROUGHPUT_GOAL,
                loaded.ratio,
            )
        )
    return [(name, met, f"{value:g}") for name, met, value in out]


def _cpu_cell(figures: Figures, server: str) -> str:
    value = figures.cpu_ms_per_request.get(server)
    return f"{value:>6.2f}" if value is not None else f"{'-':>6}"


def render(rows: Sequence[Row], met: Sequence[tuple[str, bool, str]], meta: dict[str, Any]) -> str:
    lines = [
        f"== proxy overhead: {meta['ledger']} ledger, auth {meta['auth']}, {meta['proxy_workers']} proxy "
        f"worker(s), {meta['client_procs']} client process(es), {meta['rounds']} round(s) x "
        f"{meta['seconds']:g} s per phase =="
    ]
    head = (
        f"{'clients':>7} {'request':<7} {'direct/s':>8} {'p50':>6} {'p99':>6} "
        f"{'proxied/s':>9} {'p50':>6} {'p99':>6} {'+p50':>6} {'+p99':>6} {'ratio':>5} "
        f"{'sim':>6} {'proxy':>6} {'sim':>6}"
    )
    lines += [head, "-" * len(head)]
    for r in rows:
        d, p = r.direct, r.proxied
        lines.append(
            f"{r.clients:>7} {r.kind:<7} {d.per_s:>8,.0f} {d.p50_ms:>6.2f} {d.p99_ms:>6.2f} "
            f"{p.per_s:>9,.0f} {p.p50_ms:>6.2f} {p.p99_ms:>6.2f} {r.added_p50:>6.2f} {r.added_p99:>6.2f} "
            f"{r.ratio:>5.2f} {_cpu_cell(d, 'simulator')} {_cpu_cell(p, 'proxy')} {_cpu_cell(p, 'simulator')}"
        )
    lines += [
        "latencies in ms; +p50/+p99 = proxied - direct; ratio = proxied/direct requests per second;",
        "last three columns: CPU ms per request of the simulator (direct run), then of the proxy",
        "and of the simulator (proxied run)",
        "goals:",
    ]
    lines += [f"  [{'PASS' if ok else 'MISS'}] {name}: {detail}" for name, ok, detail in met]
    lines += [f"note: {note}" for note in meta["notes"]]
    return "\n".join(lines)


def _notes(load_before: float, load_after: float, as_shipped: bool) -> list[str]:
    import importlib.util

    notes = []
    cpus = os.cpu_count() or 1
    if load_before > BUSY_LOAD:
        notes.append(
            f"load average {load_before:.2f} before the run ({load_after:.2f} after, this run's own "
            f"included) on {cpus} CPUs: other work shared the machine; the alternating phases "
            "spread it over both targets, but the figures are noisier"
        )
    if importlib.util.find_spec("sniffio") is None:
        notes.append(
            "sniffio is not installed: httpcore (the proxy's HTTP client) tries to import it on "
            "every request, and each failed import searches sys.path"
        )
    if as_shipped:
        notes.append("--as-shipped: listening sockets without TCP_NODELAY (delayed ACKs on keep-alive)")
    return notes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per phase (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of alternating phases (default 3)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--ledger-backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--auth", choices=("api-key", "jwt"), default="api-key", help="how clients and the proxy sign"
    )
    parser.add_argument("--proxy-workers", type=int, default=1, help="proxy processes (default 1)")
    parser.add_argument("--client-procs", type=int, default=1, help="load generator processes (default 1)")
    parser.add_argument(
        "--as-shipped",
        action="store_true",
        help="serve without the TCP_NODELAY fix of the listening socket (see _LAUNCHER)",
    )
    parser.add_argument(
        "--py-spy", metavar="FILE", help="sample the proxy with py-spy; collapsed stacks to FILE"
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s phases")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 1.0, 1
    if args.seconds <= 0 or args.rounds < 1 or args.clients < 2:
        parser.error("--seconds must be positive, --rounds at least 1, --clients at least 2")
    if args.proxy_workers < 1 or args.client_procs < 1:
        parser.error("--proxy-workers and --client-procs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="kling-proxy-bench-") as tmp:
        try:
            with ProcessPoolExecutor(args.client_procs, mp_context=get_context("spawn")) as pool:
                rows = Runner(args, Path(tmp), pool).run(args.rounds, args.seconds, (1, args.clients))
        except BenchError as exc:
            print(f"proxy_bench: {exc}", file=sys.stderr)
            return 1
    met = goals(rows, args.clients)
    meta = {
        "ledger": "postgres" if args.ledger_backend == "postgres" else "sqlite",
        "auth": args.auth,
        "proxy_workers": args.proxy_workers,
        "client_procs": args.client_procs,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "clients": args.clients,
        "cpus": os.cpu_count(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "python": sys.version.split()[0],
        "notes": _notes(load_before, os.getloadavg()[0], args.as_shipped),
    }
    if args.json:
        payload = {
            **meta,
            "rows": [r.to_dict() for r in rows],
            "goals": [{"goal": name, "met": ok, "value": detail} for name, ok, detail in met],
        }
        print(json.dumps(payload, indent=2))
    else:
        print(f"python {meta['python']}, {meta['cpus']} CPUs")
        print(render(rows, met, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
