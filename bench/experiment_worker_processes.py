"""Experiment, not the product: would mapping and COPY encoding in worker processes pay?

The CLI is one Python process; the GIL serialises reading, mapping and encoding (about 22 us of CPU
per row on the bench table) while the two database servers share the other core. This script runs
a stripped-down pipeline on bench/gen.py's table: the parent reads packed rows (JSON_ARRAY through
PyMySQL) and writes COPY text into a staging table plus one upsert per chunk; N worker processes
decode, fingerprint, map (the real Mapper of bench/appointments.yaml) and COPY-encode. N = 0 runs the
same work on a thread of the parent, the baseline. No SyncHistory, checkpoints, dead letters or
counts: it measures the ceiling of the design, not a finished feature.

    .venv/bin/python bench/gen.py --rows 1000000
    .venv/bin/python bench/experiment_worker_processes.py 0     # baseline: one process
    .venv/bin/python bench/experiment_worker_processes.py 2     # two mapping processes
"""
import io
import json
import multiprocessing as mp
import os
import sys
import time
from decimal import Decimal
from itertools import repeat
from operator import itemgetter
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("SRBENCH_SOURCE_URL", "mysql+pymysql://root:@127.0.0.1:3306/srbench")
import pymysql, psycopg2

COLS = "id, prospect_id, user_id, starts_at, duration, amount, complete, confirmed, city, email, notes, updated_at"
PACK = ("JSON_ARRAY(id+0, prospect_id+0, user_id+0, starts_at, duration+0, amount, complete+0, confirmed+0, "
        "CONCAT(city), CONCAT(email), CONCAT(notes), updated_at)")

def worker(inq, outq):
    from syncrunner.spec import load_spec
    from syncrunner.runtime.mapping import Mapper
    from syncrunner.runtime.writer import build_table
    from syncrunner.runtime.fingerprint import Fingerprinter
    from syncrunner.adapters.sources.sql import _pymysql_datetime, record_maker
    from syncrunner.adapters.targets.postgresql import column_encoder
    from sqlalchemy.dialects import postgresql
    spec = load_spec(os.path.join(os.path.dirname(os.path.abspath(__file__)), "appointments.yaml"))
    m = Mapper(spec); fper = Fingerprinter(spec, skip_validation=False)
    conv = _pymysql_datetime()
    names = [c.strip() for c in COLS.split(",")]
    make = record_maker(names, {3: conv, 11: conv})
    encs = [(c.name, column_encoder(c, postgresql.dialect())) for c in build_table(spec).columns]
    scan = json.JSONDecoder(parse_float=Decimal).scan_once
    while True:
        raw = inq.get()
        if raw is None:
            break
        recs = [make(*a) for a, _ in map(scan, raw, repeat(0))]
        fps = fper.of(recs, raw)
        rows = []
        for r, fp in zip(recs, fps):
            row = m.map(r); row["_sr_fingerprint"] = fp; rows.append(row)
        cols = [enc([r.get(n) for r in rows]) for n, enc in encs]
        outq.put(("\n".join(map("\t".join, zip(*cols))) + "\n", len(rows)))

def main(nworkers):
    admin = psycopg2.connect("host=127.0.0.1 user=postgres dbname=postgres")
    admin.autocommit = True
    admin.cursor().execute("DROP DATABASE IF EXISTS srproto")
    admin.cursor().execute("CREATE DATABASE srproto")
    admin.close()
    pg = psycopg2.connect("host=127.0.0.1 user=postgres dbname=srproto")
    cur = pg.cursor()
    cur.execute("DROP TABLE IF EXISTS t"); cur.execute("""CREATE TABLE t (id BIGINT PRIMARY KEY, prospect_id BIGINT NOT NULL,
      user_id BIGINT, starts_at TIMESTAMPTZ NOT NULL, duration_min BIGINT, amount NUMERIC(10,2), complete BOOLEAN,
      confirmed BOOLEAN, city VARCHAR(100), email VARCHAR(255), notes TEXT, updated_at TIMESTAMPTZ NOT NULL, _sr_fingerprint BIGINT)""")
    cur.execute("CREATE TEMP TABLE s (LIKE t)"); pg.commit()
    if nworkers == 0:
        import queue, threading
        inq, outq = queue.Queue(4), queue.Queue(4)
        procs = [threading.Thread(target=worker, args=(inq, outq))]
    else:
        inq, outq = mp.Queue(4), mp.Queue(4)
        procs = [mp.Process(target=worker, args=(inq, outq)) for _ in range(nworkers)]
    for p in procs: p.start()
    my = pymysql.connect(host="127.0.0.1", user="root", password="", database="srbench", cursorclass=pymysql.cursors.SSCursor)
    mc = my.cursor()
    t0 = time.perf_counter()
    mc.execute(f"SELECT {PACK} FROM bench_appointment ORDER BY updated_at, id")
    sent = got = n = 0
    def drain(block):
        nonlocal got, n
        while got < sent and (block or not outq.empty()):
            text, k = outq.get()
            cur.execute("TRUNCATE s")
            cur.copy_expert("COPY s FROM STDIN", io.StringIO(text), size=1 << 20)
            cur.execute("INSERT INTO t SELECT * FROM s ON CONFLICT (id) DO UPDATE SET notes = EXCLUDED.notes")
            pg.commit(); got += 1; n += k
            block = False
    while True:
        rows = mc.fetchmany(5000)
        if not rows: break
        inq.put([r[0] for r in rows]); sent += 1
        drain(False)
    while got < sent: drain(True)
    for _ in procs: inq.put(None)
    el = time.perf_counter() - t0
    print(f"workers={nworkers}: {n} rows in {el:.1f}s = {n/el:,.0f} rows/s")
    for p in procs: p.join()

if __name__ == "__main__":
    main(int(sys.argv[1]))
