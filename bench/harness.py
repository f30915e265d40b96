"""Shared plumbing: figures and statistics, uvicorn subprocesses, scratch databases, cleanup.

Everything that is started or created is registered for cleanup at once, so servers are
killed, databases dropped and Redis keys deleted even when a benchmark fails half-way
(try/finally in the callers, atexit and SIGTERM as a last resort).
"""

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import LoadResult, RequestFactory, build_request, request_once, run_async, run_load

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
API_KEY = "bench-api-key-0123456789abcdef"

# Settings the app reads from the environment; a developer's shell must not leak into a run.
APP_ENV_VARS = (
    "DATABASE_URL",
    "DB_POOL_SIZE",
    "REDIS_URL",
    "REDIS_PREFIX",
    "REDIS_TIMEOUT_SECONDS",
    "POLICY_POLL_INTERVAL_SECONDS",
    "API_KEY",
    "GOVERNANCE_LIMITS_ENABLED",
    "QUANTUM_RISK_MODE",
    "LOG_LEVEL",
    "ACCOUNT_ID",
    "PAPER_STARTING_BALANCE",
    "TAKER_FEE_RATE",
    "MARKETS_FILE",
    "MAX_PRICE_AGE_SECONDS",
    "MAX_PRICE_FUTURE_SKEW_SECONDS",
    "ASSUMED_STOP_DISTANCE_PCT",
    "LOSING_STREAK_THRESHOLD",
    "LOSING_STREAK_LEVERAGE_MULTIPLIER",
    "RECOVERY_WINS",
    "SEQUENCER_MAX_BATCH",
)


class BenchError(RuntimeError):
    """The run is invalid (setup failed, wrong status codes): no figure may be trusted."""


# Figures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    op: str  # "<=" or ">="
    value: float

    def met(self, measured: float) -> bool:
        return measured <= self.value if self.op == "<=" else measured >= self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


@dataclass
class Figure:
    """One reported number: `value` is the headline (a median), the rest says how it was got."""

    name: str
    unit: str
    value: float
    stat: str
    samples: int
    sample_kind: str
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    target: Target | None = None
    note: str = ""

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.target.met(self.value)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = None if self.target is None else {"op": self.target.op, "value": self.target.value}
        data["passed"] = self.passed
        return data


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return float("nan")
    rank = (len(sorted_values) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def spread(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "min": ordered[0],
        "max": ordered[-1],
    }


# Cleanup -------------------------------------------------------------------------------

_cleanups: list[tuple[str, Callable[[], None]]] = []


def register_cleanup(label: str, action: Callable[[], None]) -> Callable[[], None]:
    """Register `action`; the returned callable runs it now (once) and unregisters it."""
    entry = (label, action)
    _cleanups.append(entry)

    def run_now() -> None:
        if entry in _cleanups:
            _cleanups.remove(entry)
            action()

    return run_now


def cleanup_all() -> None:
    while _cleanups:
        label, action = _cleanups.pop()
        try:
            action()
        except Exception as exc:
            print(f"bench: cleanup of {label} failed: {exc}", file=sys.stderr)


def _on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


atexit.register(cleanup_all)
signal.signal(signal.SIGTERM, _on_sigterm)


# Servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in APP_ENV_VARS}
    env.update(overrides)
    return env


@dataclass
class Server:
    """A uvicorn process serving `app_path` on 127.0.0.1:`port` (one worker)."""

    label: str
    app_path: str
    env: dict[str, str]
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)
    _stop: Callable[[], None] | None = None

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            self.app_path,
            "--app-dir",
            str(REPO),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]

    def start(self, ready_path: str = "/health", timeout: float = 60.0) -> None:
        self.port = free_port()
        self.log_path = self.workdir / f"{self.label}.log"
        with self.log_path.open("wb") as log:
            # Own session and cwd: its .env lookup finds nothing of the developer's.
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._stop = register_cleanup(f"server {self.label} pid {self.proc.pid}", self._terminate)
        probe = build_request("GET", ready_path, HOST, self.port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.label} exited with {self.proc.returncode} at startup:\n{self.log_tail()}")
            try:
                if asyncio.run(request_once(HOST, self.port, probe, limit_s=2.0)).status == 200:
                    return
            except (OSError, TimeoutError):
                pass
            time.sleep(0.1)
        raise BenchError(f"{self.label} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None

    def _terminate(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def cpu_seconds(self) -> float:
        """User+system CPU time of the server process so far (Linux /proc)."""
        if self.proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError(f"{self.label} died during the run:\n{self.log_tail()}")

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "(no log)"


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat; (0, 0) where unavailable."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def load(
    server: Server,
    make_request: RequestFactory,
    *,
    connections: int,
    warmup_s: float,
    duration_s: float,
    max_requests: int,
    ok_status: int,
    what: str,
) -> LoadResult:
    """One load round on `server`; any status other than `ok_status` makes the run invalid."""
    cpu_before = server.cpu_seconds()
    busy_before, total_before = _cpu_ticks()
    result = run_async(
        run_load(
            HOST,
            server.port,
            make_request,
            connections=connections,
            warmup_s=warmup_s,
            duration_s=duration_s,
            max_requests=max_requests,
            ok_status=ok_status,
        )
    )
    result.server_cpu_pct = 100 * (server.cpu_seconds() - cpu_before) / result.wall_s
    busy_after, total_after = _cpu_ticks()
    if total_after > total_before:
        result.machine_busy_pct = 100 * (busy_after - busy_before) / (total_after - total_before)
    server.check_alive()
    bad = result.non_ok(ok_status)
    if bad or result.requests == 0:
        raise BenchError(
            f"{server.label} ({what}): {bad} responses other than {ok_status} or transport errors; "
            f"measured statuses {dict(result.statuses)}, warm-up statuses {dict(result.warmup_statuses)}, "
            f"errors {result.errors[:3]}, samples {result.bad_samples[:3]}"
        )
    return result


def cpu_note(results: Sequence[LoadResult]) -> str:
    """Median CPU over rounds: server and client in % of one core, the whole machine in % of all cores.

    A server well below 100% while the machine is not saturated was not the bottleneck.
    """
    server = statistics.median(r.server_cpu_pct for r in results)
    client = statistics.median(r.client_cpu_pct for r in results)
    machine = statistics.median(r.machine_busy_pct for r in results)
    return f"CPU server {server:.0f}%, client {client:.0f}%, machine {machine:.0f}%"


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        yield Path(name)


@contextlib.contextmanager
def running(*servers: Server, ready_path: str = "/health") -> Iterator[None]:
    try:
        for server in servers:
            server.start(ready_path)
        yield
    finally:
        for server in servers:
            server.stop()


# Databases -----------------------------------------------------------------------------


def migrate(database_url: str) -> None:
    """`alembic upgrade head` from the repository root, as the README says."""
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO,
        env=clean_env(DATABASE_URL=database_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"alembic upgrade head failed ({done.returncode}):\n{done.stderr[-3000:]}")


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def pg_fetch(database: str, sql: str) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}", timeout=10)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, uniquely named database, dropped afterwards (even if servers still hold it)."""
    name = f"qt_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    drop = register_cleanup(
        f"database {name}", lambda: asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    )
    try:
        yield name
    finally:
        drop()


def redis_prefix_keys(url: str, prefix: str) -> Callable[[], None]:
    """Cleanup action deleting every key under `prefix:`."""

    def delete() -> None:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=100))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    return delete


def server_version() -> str:
    async def fetch() -> str:
        import asyncpg

        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    try:
        return asyncio.run(fetch())
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"
