"""Measurement: page concurrency (`pagination.concurrency`) of the HTTP source, sequential against 2
and 4 pages at once, through the real CLI into PostgreSQL, against the Arrivy fake with a per-request
latency like a real API's.

    python bench/pages.py --tasks 5000 --per-page 100 --latency 0.2 --rounds 3

Each run is a fresh `syncrunner run --full` subprocess into a fresh PostgreSQL database; rows and
API calls come from its SyncHistory row, wall time from around the subprocess. Prints medians."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.fakes.arrivy import FakeArrivy  # noqa: E402
from tests.fakes.server import Faults  # noqa: E402
from tests.test_page_concurrency import KEY, T0, TOKEN, arrivy_spec  # noqa: E402

SYNCRUNNER = Path(sys.executable).with_name("syncrunner")


def one_run(fake: FakeArrivy, server: str, spec: Path, concurrency: int) -> dict:
    name = f"srbench_pages_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = f"{server}/{name}"
    try:
        env = dict(os.environ, ARRIVY_BASE_URL=fake.base_url, ARRIVY_AUTH_KEY=KEY, ARRIVY_AUTH_TOKEN=TOKEN)
        started = time.perf_counter()
        done = subprocess.run([str(SYNCRUNNER), "run", str(spec), "--target", url, "--full", "--no-progress"],
                              env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        assert done.returncode == 0, done.stdout + done.stderr
        engine = sa.create_engine(url)
        with engine.connect() as c:
            h = c.execute(sa.text("SELECT records_processed, performance_metrics FROM sync_history "
                                  "ORDER BY id DESC LIMIT 1")).one()
        engine.dispose()
        metrics = h.performance_metrics if isinstance(h.performance_metrics, dict) else json.loads(h.performance_metrics)
        return {"concurrency": concurrency, "rows": h.records_processed, "wall": wall,
                "run_seconds": metrics["duration_seconds"], "api_calls": metrics["api_calls"],
                "unused": metrics.get("pages_fetched_unused", 0)}
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--per-page", type=int, default=100)
    ap.add_argument("--latency", type=float, default=0.2, help="seconds per request in the fake")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--pg-server", default=os.environ.get("SRBENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432"))
    args = ap.parse_args()
    with FakeArrivy(KEY, TOKEN, faults=Faults(latency_seconds=args.latency)) as fake, \
            tempfile.TemporaryDirectory() as tmp:
        fake.seed(T0, tasks=args.tasks, crew=3, groups=2, statuses_per_task=0)
        print(f"{args.tasks} tasks, {args.per_page} per page, {args.latency * 1000:.0f} ms per request, "
              f"medians of {args.rounds}")
        print(f"{'concurrency':>11} {'rows':>6} {'wall s':>7} {'run s':>7} {'rows/s':>8} {'calls':>6} {'unused':>6} {'vs 1':>6}")
        base = None
        for c in args.concurrency:
            spec = arrivy_spec(Path(tmp), concurrency=c, per_page=args.per_page)
            runs = [one_run(fake, args.pg_server, spec, c) for _ in range(args.rounds)]
            wall = statistics.median(r["wall"] for r in runs)
            run_s = statistics.median(r["run_seconds"] for r in runs)
            rows = runs[0]["rows"]
            base = base or wall
            print(f"{c:>11} {rows:>6} {wall:>7.2f} {run_s:>7.2f} {rows / run_s:>8.0f} {runs[0]['api_calls']:>6} "
                  f"{runs[0]['unused']:>6} {base / wall:>5.2f}x")


if __name__ == "__main__":
    main()
