"""`python -m bench [--quick] [--only NAME]`: run the benchmarks, print a table, write results.

Exit status: 0 when every benchmark ran and met its targets; 1 when a target was missed
(full runs only: a --quick run is too short to judge targets, it checks the harness);
2 when a benchmark could not run or its run was invalid (e.g. a non-201 response).
"""

import argparse
import hashlib
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.harness import REPO, BenchError, Figure, cleanup_all, server_version

BENCHMARKS = (
    "risk_guard",
    "policy_read",
    "trades_write",
    "signals",
    "signals_training",
    "riskbrain",
    "governance",
    "exits",
)
RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "pydantic", "sqlalchemy", "asyncpg", "redis")


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "postgres": server_version(),
        "git_commit": commit or None,
        "packages": versions,
    }


def source_fingerprint() -> str:
    """Hash of the code under test: figures are only comparable if it did not change mid-run."""
    digest = hashlib.sha256()
    for folder in ("app", "alembic", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            digest.update(str(path.relative_to(REPO)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def run_one(name: str, quick: bool) -> dict[str, Any]:
    module = importlib.import_module(f"bench.{name}")
    started = time.monotonic()
    entry: dict[str, Any] = {"status": "ok", "error": None, "figures": [], "details": {}}
    print(f"== {name} ...", flush=True)
    try:
        figures, details = module.run(quick)
        entry["figures"] = figures
        entry["details"] = details
    except BenchError as exc:
        entry.update(status="error", error=str(exc))
    except Exception as exc:
        entry.update(status="error", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    finally:
        cleanup_all()
    entry["seconds"] = round(time.monotonic() - started, 1)
    if entry["error"]:
        print(f"!! {name} FAILED: {entry['error']}", file=sys.stderr, flush=True)
    return entry


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def _verdict(figure: Figure, quick: bool) -> str:
    if figure.passed is None:
        return ""
    verdict = "PASS" if figure.passed else "FAIL"
    return f"{verdict} (quick)" if quick else verdict


def table_rows(results: dict[str, dict[str, Any]], quick: bool) -> list[list[str]]:
    rows = []
    for name, entry in results.items():
        if entry["status"] != "ok":
            first_line = entry["error"].splitlines()[0][:100]
            rows.append([name, "ERROR (run invalid)", first_line, "", "", "", "", "", "ERROR"])
            continue
        for f in entry["figures"]:
            rows.append(
                [
                    name,
                    f.name,
                    f"{_fmt(f.value)} {f.unit}",
                    f.stat,
                    "/".join(_fmt(v) for v in (f.p50, f.p90, f.p99)) if f.p50 is not None else "",
                    f"{f.samples:,} {f.sample_kind}",
                    str(f.target or ""),
                    f.note,
                    _verdict(f, quick),
                ]
            )
    return rows


HEADER = ["benchmark", "figure", "value", "statistic", "p50/p90/p99", "samples", "target", "note", "result"]


def render_text(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [HEADER, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(report: dict[str, Any], rows: list[list[str]]) -> str:
    m = report["machine"]
    out = [
        "# Benchmark results",
        "",
        f"- command: `{report['command']}`{' (QUICK: smoke run, targets not judged)' if report['quick'] else ''}",
        f"- date: {m['date']}, duration {report['seconds']} s",
        f"- machine: {m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}, PostgreSQL {m['postgres']}, "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}",
        f"- commit: {m['git_commit']}; sources (app, alembic, bench) sha256 {report['source_sha256']['start']}",
        f"- overall: **{report['overall']}**",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
    ]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    errors = [(n, e["error"]) for n, e in report["benchmarks"].items() if e["error"]]
    for name, error in errors:
        out += ["", f"## {name}: error", "", "```", error.strip(), "```"]
    out += ["", "Details (rounds, per-round figures, server command) are in `latest.json`.", ""]
    return "\n".join(out)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run (smoke test); targets shown, not enforced")
    parser.add_argument(
        "--only", metavar="NAME", action="append", choices=BENCHMARKS, help="run only NAME (repeatable)"
    )
    args = parser.parse_args(argv)
    selected = [b for b in BENCHMARKS if not args.only or b in args.only]

    started = time.monotonic()
    machine = machine_info()
    source_before = source_fingerprint()
    results = {name: run_one(name, args.quick) for name in selected}
    source_after = source_fingerprint()

    failed_targets = [f"{n}: {f.name}" for n, e in results.items() for f in e["figures"] if f.passed is False]
    errored = [n for n, e in results.items() if e["status"] != "ok"]
    if errored:
        overall, code = f"ERROR in {', '.join(errored)}", 2
    elif failed_targets and not args.quick:
        overall, code = f"FAIL ({len(failed_targets)} target(s) missed)", 1
    elif failed_targets:
        overall, code = f"OK (quick run; {len(failed_targets)} target(s) would be missed)", 0
    else:
        overall, code = "PASS", 0
    if source_after != source_before:
        overall += " - WARNING: the code under test changed during the run, figures mix versions"

    machine["loadavg_at_end"] = os.getloadavg()
    command = " ".join([".venv/bin/python -m bench", *(argv if argv is not None else sys.argv[1:])])
    report: dict[str, Any] = {
        "command": command,
        "quick": args.quick,
        "overall": overall,
        "seconds": round(time.monotonic() - started, 1),
        "machine": machine,
        "source_sha256": {"start": source_before, "end": source_after},
        "benchmarks": {name: {**e, "figures": [f.as_dict() for f in e["figures"]]} for name, e in results.items()},
        "failed_targets": failed_targets,
    }
    rows = table_rows(results, args.quick)
    print()
    print(render_text(rows))
    print(f"\noverall: {overall}")

    RESULTS.mkdir(exist_ok=True)
    write_atomic(RESULTS / "latest.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    write_atomic(RESULTS / "latest.md", render_markdown(report, rows))
    print(f"written: {RESULTS / 'latest.json'} and latest.md")
    return code


if __name__ == "__main__":
    sys.exit(main())
