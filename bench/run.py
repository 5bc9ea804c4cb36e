"""Benchmark: syncrunner's real CLI path against a plain COPY floor, on the same MariaDB data.

    python bench/run.py --rows 1000000                  # MariaDB -> PostgreSQL
    python bench/run.py --rows 1000000 --target sqlite  # MariaDB -> SQLite

Each round, on a fresh target: (1) full sync, (1b) full sync of the first 100,000 rows only
(--max-records; the memory baseline), (2) the no-change run (--full again: every row read and
compared, none written), (2b) the no-change delta run, (3) an incremental run after 1% of the rows
changed, (4) the floor: the same rows already in Python memory written with one plain COPY
(PostgreSQL) or one executemany in one transaction (SQLite), (5) one plain streaming SELECT of the
same rows (what the source server spends on them: MariaDB's CPU seconds are taken from /proc around
every run), (6) the same 10,000-row change on a 100,000-row table (a database `<source>_small`), so
the incremental's cost can be seen to follow the change, not the table. Every syncrunner run is a fresh
`syncrunner run` subprocess under /usr/bin/time, so its peak RSS is the CLI's own (the largest
single process); "tree MB" is the peak of the run's processes summed (the CLI and its mapping
workers), sampled from /proc every 0.1 s. MariaDB's buffer pool is raised to hold the table for
the rounds if it is smaller (source_cache; --keep-buffer-pool leaves it). Prints medians over the
rounds. Counts come from the target's sync_history row, not from the CLI's output."""
from __future__ import annotations

import argparse
import compileall
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.gen import TABLE, generate, touch  # noqa: E402
from syncrunner.dburl import create_engine  # noqa: E402

SPEC = HERE / "appointments.yaml"
SMALL_ROWS = 100_000  # the smaller table of the incremental comparison
SYNCRUNNER = Path(sys.executable).with_name("syncrunner")
SOURCE_COLS = ["id", "prospect_id", "user_id", "starts_at", "duration", "amount", "complete",
               "confirmed", "city", "email", "notes", "updated_at"]
FLOOR_DDL = """CREATE TABLE {name} (id BIGINT PRIMARY KEY, prospect_id BIGINT NOT NULL, user_id BIGINT,
  starts_at {ts} NOT NULL, duration_min BIGINT, amount NUMERIC(10,2), complete BOOLEAN, confirmed BOOLEAN,
  city VARCHAR(100), email VARCHAR(255), notes TEXT, updated_at {ts} NOT NULL)"""


@dataclass
class Measure:
    name: str
    rows: int
    seconds: float
    rss_mb: float | None
    counts: dict[str, int] | None = None
    tree_mb: float | None = None    # the run's processes together (with its mapping workers), sampled
    source_cpu: float | None = None  # MariaDB's CPU seconds (user + system) during the run

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


# -- the syncrunner runs: one fresh CLI process each ----------------------------------------------
def cli_run(name: str, target_url: str, source_url: str, *flags: str) -> Measure:
    """Runs under /usr/bin/time: a child forked from this (large) process would report this
    process's resident pages as its own peak, whereas time(1) is tiny."""
    env = dict(os.environ, SRBENCH_SOURCE_URL=source_url)
    cpu_before = server_cpu()
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        cmd = ["/usr/bin/time", "-f", "%M", "-o", rss_file.name,
               str(SYNCRUNNER), "run", str(SPEC), "--target", target_url, *flags]
        started = time.monotonic()
        with tempfile.TemporaryFile() as output:
            proc = subprocess.Popen(cmd, env=env, stdout=output, stderr=subprocess.STDOUT)
            sampler = TreeSampler(proc.pid)
            proc.wait()  # the wall time ends when the process does, not at the sampler's next tick
            seconds = time.monotonic() - started
            tree_mb = sampler.stop()
            source_cpu = server_cpu() - cpu_before
            output.seek(0)
            printed = output.read()
        if proc.returncode != 0:
            sys.exit(f"{name}: syncrunner exited {proc.returncode}:\n{printed.decode(errors='replace')}")
        rss_mb = int(rss_file.read().split()[-1]) / 1024.0
    counts = last_history(target_url)
    return Measure(name, counts["fetched"], seconds, rss_mb, counts, tree_mb, source_cpu)


def server_cpu() -> float:
    """CPU seconds (user + system) the local MariaDB server has used, from /proc/<pid>/stat: what
    a run costs the source server, whatever its driver does. The server's own, so other clients'
    queries during a run count too (the bench's machine should be otherwise quiet)."""
    stat = Path(f"/proc/{_server_pid()}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_pid() -> int:
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and (p / "comm").read_text().strip() in ("mariadbd", "mysqld"):
                return int(p.name)
        except OSError:
            continue
    sys.exit("bench: no local mariadbd/mysqld process to measure the source server's CPU")


def plain_select(source_url: str) -> Measure:
    """The comparison for the source's CPU: the same rows in the same order, read by one plain
    streaming SELECT with the same driver and nothing done with them."""
    engine = create_engine(source_url)
    cpu_before, started, n = server_cpu(), time.monotonic(), 0
    with engine.connect() as c:
        result = c.execution_options(stream_results=True, max_row_buffer=5000).execute(sa.text(
            f"SELECT {', '.join(SOURCE_COLS)} FROM {TABLE} ORDER BY updated_at, id"))
        while batch := result.fetchmany(5000):
            n += len(batch)
    seconds, source_cpu = time.monotonic() - started, server_cpu() - cpu_before
    engine.dispose()
    return Measure("5  plain SELECT of the same rows", n, seconds, None, source_cpu=source_cpu)


class TreeSampler:
    """Samples the run's processes together (the CLI and its mapping workers) every 0.1 s on a
    thread of its own, so the run's wall time is taken when it exits (polling in the timing loop
    added up to one sampling interval, ~0.05 s on average, to every run)."""

    def __init__(self, root: int):
        self.root, self.peak = root, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, tree_rss_mb(self.root))
            self._done.wait(0.1)

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.peak


def tree_rss_mb(root: int) -> float:
    """Resident MB of `root`'s descendants (not /usr/bin/time itself), summed, from /proc."""
    total, todo = 0, _children(root)
    while todo:
        pid = todo.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        todo += _children(pid)
    return total / 1024.0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def last_history(target_url: str) -> dict[str, int]:
    engine = create_engine(target_url)
    with engine.connect() as c:
        h = c.execute(sa.text("SELECT records_processed, records_created, records_updated, records_failed, "
                              "performance_metrics FROM sync_history ORDER BY id DESC LIMIT 1")).one()
    engine.dispose()
    m = h.performance_metrics if isinstance(h.performance_metrics, dict) else json.loads(h.performance_metrics)
    return {"fetched": h.records_processed, "created": h.records_created, "updated": h.records_updated,
            "unchanged": m.get("records_unchanged", 0) + m.get("records_stale", 0), "failed": h.records_failed}


# -- the floor: rows already in memory, one plain bulk write -----------------------------------------
@contextmanager
def source_cache(source_url: str, keep: bool) -> Iterator[None]:
    """MariaDB's buffer pool sized to hold the bench table, as a production source's is (Debian's
    default is 128 MB, with O_DIRECT: a 1,000,000-row table then comes from disk on every read, and
    the no-change run measures the disk). Restored afterwards; `keep` leaves the server alone."""
    engine = create_engine(source_url)
    with engine.connect() as c:
        pool = int(c.execute(sa.text("SELECT @@innodb_buffer_pool_size")).scalar_one())
        size = int(c.execute(sa.text(
            "SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name = :t"), {"t": TABLE}).scalar_one())
    mb = 1 << 20
    want = -(-int(size * 1.25) // (128 * mb)) * 128 * mb  # whole 128 MB chunks
    raised = not keep and want > pool
    if raised:
        with engine.connect() as c:
            c.execute(sa.text("SET GLOBAL innodb_buffer_pool_size = :n"), {"n": want})
    print(f"source: table {size / mb:.0f} MB, innodb_buffer_pool_size {pool / mb:.0f} MB"
          + (f", raised to {want / mb:.0f} MB for the bench (restored after)" if raised else
             " (left as it is)" if want > pool else ""), flush=True)
    try:
        yield
    finally:
        if raised:
            with engine.connect() as c:
                c.execute(sa.text("SET GLOBAL innodb_buffer_pool_size = :n"), {"n": pool})
        engine.dispose()


def load_source_rows(source_url: str) -> list[tuple]:
    engine = create_engine(source_url)
    with engine.connect() as c:
        rows = [tuple(r) for r in c.execute(sa.text(
            f"SELECT {', '.join(SOURCE_COLS)} FROM {TABLE} ORDER BY updated_at, id"))]
    engine.dispose()
    return rows


def _copy_field(v: Any) -> str:
    if v is None:
        return "\\N"
    if isinstance(v, str):
        return v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return str(v)


class _Lines(io.RawIOBase):
    """A read()-able stream of COPY text lines, produced as psycopg2 asks for them."""

    def __init__(self, lines: Iterable[str]):
        self.lines: Iterator[str] = iter(lines)
        self.buf = b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buf) < n:
            part = "".join(line for _, line in zip(range(2000), self.lines))
            if not part:
                break
            self.buf += part.encode()
        out, self.buf = (self.buf, b"") if n < 0 else (self.buf[:n], self.buf[n:])
        return out


def floor_postgresql(target_url: str, rows: list[tuple]) -> Measure:
    engine = create_engine(target_url)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("DROP TABLE IF EXISTS bench_floor")
        cur.execute(FLOOR_DDL.format(name="bench_floor", ts="TIMESTAMPTZ"))
        raw.commit()
        started = time.monotonic()
        lines = ("\t".join(map(_copy_field, r)) + "\n" for r in rows)
        cur.copy_expert("COPY bench_floor FROM STDIN", _Lines(lines), size=1 << 16)
        raw.commit()
        seconds = time.monotonic() - started
    finally:
        raw.close()
        engine.dispose()
    return Measure("4  floor: plain COPY from memory", len(rows), seconds, None)


def floor_sqlite(target_url: str, rows: list[tuple]) -> Measure:
    import sqlite3
    db = sqlite3.connect(sa.engine.make_url(target_url).database, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("DROP TABLE IF EXISTS bench_floor")
        db.execute(FLOOR_DDL.format(name="bench_floor", ts="DATETIME"))
        started = time.monotonic()
        db.execute("BEGIN")
        db.executemany("INSERT INTO bench_floor VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                       ([str(v) if not isinstance(v, (int, str, type(None))) else v for v in r] for r in rows))
        db.execute("COMMIT")
        seconds = time.monotonic() - started
    finally:
        db.close()
    return Measure("4  floor: plain executemany from memory", len(rows), seconds, None)


# -- targets --------------------------------------------------------------------------------------
class PgTarget:
    def __init__(self, server: str, name: str = "srbench_target"):
        self.admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
        self.url = f"{server}/{name}"
        self.name = name

    def reset(self) -> None:
        with self.admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            c.execute(sa.text(f'CREATE DATABASE "{self.name}"'))


class SqliteTarget:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="srbench-"))
        self.url = f"sqlite:///{self.dir / 'target.db'}"

    def reset(self) -> None:
        for p in self.dir.glob("target.db*"):  # the database, its WAL and journal, its lock folder
            shutil.rmtree(p) if p.is_dir() else p.unlink()


# -- one round --------------------------------------------------------------------------------------
def one_round(no: int, args: argparse.Namespace, target, floor_rows: list[tuple]) -> list[Measure]:
    src = args.source_url
    out: list[Measure] = []
    if args.rows > 100_000:
        target.reset()
        out.append(cli_run("1b full sync, first 100,000 rows", target.url, src, "--max-records", "100000"))
    target.reset()
    out.append(cli_run("1  full sync", target.url, src))
    out.append(cli_run("2  no-change run (--full)", target.url, src, "--full"))
    out.append(cli_run("2b no-change run (delta)", target.url, src))
    changed = touch(src, 1.0, no)
    out.append(cli_run(f"3  incremental, 1% changed ({changed:,})", target.url, src))
    floor = floor_postgresql if args.target == "postgresql" else floor_sqlite
    out.append(floor(target.url, floor_rows))
    out.append(plain_select(src))
    if args.small is not None:  # cost follows the change: the same 10,000 changed rows, a 10x smaller table
        small_target, small_src = args.small
        small_target.reset()
        cli_run("6  full sync, 100,000-row table", small_target.url, small_src)
        changed = touch(small_src, 100 * args.changed / SMALL_ROWS, no)
        out.append(cli_run(f"6  incremental, 100,000-row table ({changed:,} changed)", small_target.url, small_src))
    return out


def fmt(m: Measure) -> str:
    c = m.counts
    counts = f"{c['created']:>9,} {c['updated']:>9,} {c['unchanged']:>9,} {c['failed']:>6,}" if c else f"{'':>36}"
    rss = f"{m.rss_mb:>8.0f}" if m.rss_mb is not None else f"{'-':>8}"
    tree = f"{m.tree_mb:>8.0f}" if m.tree_mb is not None else f"{'-':>8}"
    cpu = f"{m.source_cpu:>7.2f}" if m.source_cpu is not None else f"{'-':>7}"
    return f"{m.name:<40} {m.rows:>9,} {m.seconds:>8.2f} {m.rate:>9,.0f} {rss} {tree} {cpu} {counts}"


HEADER = (f"{'run':<40} {'rows':>9} {'wall s':>8} {'rows/s':>9} {'RSS MB':>8} {'tree MB':>8} {'src CPU':>7} "
          f"{'created':>9} {'updated':>9} {'unchanged':>9} {'failed':>6}")


def median_measure(ms: list[Measure]) -> Measure:
    mid = sorted(ms, key=lambda m: m.seconds)[len(ms) // 2]
    rss = [m.rss_mb for m in ms if m.rss_mb is not None]
    name = ms[0].name.split(" (")[0] if ms[0].name[:2] in ("3 ", "6 ") else ms[0].name
    tree = [m.tree_mb for m in ms if m.tree_mb is not None]
    cpu = [m.source_cpu for m in ms if m.source_cpu is not None]
    return Measure(name, mid.rows, statistics.median(m.seconds for m in ms),
                   statistics.median(rss) if rss else None, mid.counts,
                   statistics.median(tree) if tree else None, statistics.median(cpu) if cpu else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--target", choices=["postgresql", "sqlite"], default="postgresql")
    ap.add_argument("--rounds", type=int, default=3, help="medians over this many rounds")
    ap.add_argument("--source-url", default=os.environ.get(
        "SRBENCH_SOURCE_URL", "mysql+pymysql://root:@127.0.0.1:3306/srbench"))
    ap.add_argument("--keep-buffer-pool", action="store_true",
                    help="leave MariaDB's innodb_buffer_pool_size as it is, even if the table does not fit")
    ap.add_argument("--pg-server", default=os.environ.get("SRBENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432"))
    ap.add_argument("--target-db", default="srbench_target",
                    help="the PostgreSQL database the bench drops and creates (one per concurrent bench)")
    ap.add_argument("--changed", type=int, default=10_000,
                    help="rows changed for the incremental run on the 100,000-row table (when --rows is larger)")
    args = ap.parse_args()

    target = PgTarget(args.pg_server, args.target_db) if args.target == "postgresql" else SqliteTarget()
    # the package byte-compiled, as an installed one is (scripts/setup does it too): else, with
    # PYTHONDONTWRITEBYTECODE set, every run would compile syncrunner's modules from source
    compileall.compile_dir(str(HERE.parent / "syncrunner"), quiet=1)
    print(f"syncrunner bench: {args.rows:,} rows, MariaDB -> {args.target}, {args.rounds} round(s); "
          f"{platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at start", flush=True)
    started = time.monotonic()
    generate(args.source_url, args.rows)
    print(f"generated {args.rows:,} source rows in {time.monotonic() - started:.1f}s", flush=True)
    floor_rows = load_source_rows(args.source_url)
    args.small = None
    if args.rows > SMALL_ROWS:
        url = sa.engine.make_url(args.source_url)
        small_src = url.set(database=f"{url.database}_small").render_as_string(hide_password=False)
        generate(small_src, SMALL_ROWS)
        small_target = (PgTarget(args.pg_server, args.target_db + "_small") if args.target == "postgresql"
                        else SqliteTarget())
        args.small = (small_target, small_src)

    rounds: list[list[Measure]] = []
    with source_cache(args.source_url, args.keep_buffer_pool):
        for no in range(1, args.rounds + 1):
            print(f"\nround {no} (load {os.getloadavg()[0]:.2f})\n{HEADER}", flush=True)
            ms = one_round(no, args, target, floor_rows)
            for m in ms:
                print(fmt(m), flush=True)
            rounds.append(ms)
    for t in [target] + ([args.small[0]] if args.small else []):
        if isinstance(t, SqliteTarget):
            shutil.rmtree(t.dir, ignore_errors=True)

    med = [median_measure([r[i] for r in rounds]) for i in range(len(rounds[0]))]
    print(f"\nmedians of {args.rounds} (load {os.getloadavg()[0]:.2f} at end)\n{HEADER}")
    for m in med:
        print(fmt(m))
    by = {m.name[:2].strip(): m for m in med}
    full, floor, same, delta, inc, select = by["1"], by["4"], by["2"], by["2b"], by["3"], by["5"]
    print(f"\nfull sync / floor: {full.rate / floor.rate:.2f} of the floor's rows/s")
    c_driver = sa.engine.make_url(args.source_url).get_driver_name() == "mysqldb"
    checks = []
    if args.target == "postgresql":
        share = 0.35 if c_driver else 0.18
        checks += [(f"full sync >= 35,000 rows/s ({full.rate:,.0f})", full.rate >= 35_000),
                   (f"full sync >= {share} of the COPY floor ({full.rate / floor.rate:.2f})",
                    full.rate >= share * floor.rate)]
    else:
        checks.append((f"full sync >= 30,000 rows/s ({full.rate:,.0f})", full.rate >= 30_000))
    checks.append((f"peak RSS of the run's processes together (with mapping workers) <= 150 MB "
                   f"({full.tree_mb:.0f})", full.tree_mb <= 150))
    if "1b" in by:
        base = by["1b"].tree_mb
        checks.append((f"... within 15% of the 100,000-row run's ({full.tree_mb:.0f} vs {base:.0f}: "
                       f"{(full.tree_mb / base - 1) * 100:+.0f}%)", full.tree_mb <= base * 1.15))
    checks.append((f"no-change run writes nothing (created {same.counts['created']}, updated "
                   f"{same.counts['updated']}, unchanged {same.counts['unchanged']:,})",
                   same.counts["created"] == same.counts["updated"] == 0
                   and same.counts["unchanged"] == same.rows))
    checks.append((f"no-change run >= 2x faster than the full run ({full.seconds / same.seconds:.1f}x)",
                   full.seconds >= 2 * same.seconds))
    checks.append((f"incremental ({inc.rows:,} changed) <= 8% of the full run's time "
                   f"({inc.seconds / full.seconds * 100:.1f}%)", inc.seconds <= 0.08 * full.seconds))
    if "6" in by:
        small = by["6"]
        checks.append((f"... and within 1.5x of the same change on the 100,000-row table ({inc.seconds:.2f}s "
                       f"vs {small.seconds:.2f}s: {inc.seconds / small.seconds:.2f}x)",
                       inc.seconds <= 1.5 * small.seconds))
    checks.append((f"source server CPU of the full run <= a plain SELECT of the same rows "
                   f"({full.source_cpu:.2f}s vs {select.source_cpu:.2f}s; "
                   f"{full.source_cpu / full.rows * 1e6:.2f} vs {select.source_cpu / select.rows * 1e6:.2f} us/row)",
                   full.source_cpu <= select.source_cpu))
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISSED'}] {text}")
    # not a target: what every run pays before its first row (start-up, locks, SyncHistory)
    print(f"  (no-change delta run: {delta.seconds:.2f}s, {delta.rows:,} rows in the lookback; "
          f"{delta.seconds / full.seconds * 100:.1f}% of the full run)")


if __name__ == "__main__":
    main()
