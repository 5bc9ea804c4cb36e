"""Fill a MariaDB table shaped like Genius appointments with N rows, server-side (the SEQUENCE
engine), so generating a million rows takes seconds and no client memory.

Twelve columns: ids, timestamps, booleans, a decimal, short and long text, an email; an index on
(updated_at, id) for keyset chunking. Every third row shares its updated_at with its neighbours, so
the keyset tiebreaker is exercised."""
from __future__ import annotations

import argparse
import datetime as dt

import sqlalchemy as sa

from syncrunner.dburl import create_engine

TABLE = "bench_appointment"
BASE = dt.datetime(2023, 1, 1, 8, 0, 0)

DDL = f"""
CREATE TABLE {TABLE} (
  id          INT NOT NULL PRIMARY KEY,
  prospect_id INT NOT NULL,
  user_id     INT NULL,
  starts_at   DATETIME NOT NULL,
  duration    INT NOT NULL,
  amount      DECIMAL(10,2) NULL,
  complete    TINYINT(1) NOT NULL,
  confirmed   TINYINT(1) NULL,
  city        VARCHAR(100) NULL,
  email       VARCHAR(255) NULL,
  notes       TEXT NULL,
  updated_at  DATETIME NOT NULL,
  KEY ix_{TABLE}_cursor (updated_at, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""

# One INSERT ... SELECT over seq_1_to_N: values are functions of the row number, deterministic.
FILL = f"""
INSERT INTO {TABLE}
SELECT seq,
       1 + (seq * 7919) % 250000,
       IF(seq % 17 = 0, NULL, 1 + seq % 400),
       :base + INTERVAL (seq * 37) % 40000000 SECOND,
       15 * (1 + seq % 8),
       IF(seq % 11 = 0, NULL, ROUND((seq % 100000) / 7, 2)),
       seq % 3 = 0,
       IF(seq % 13 = 0, NULL, seq % 2 = 0),
       ELT(1 + seq % 6, 'Boston', 'New York', 'Providence', 'Hartford', 'Albany', 'Portland'),
       IF(seq % 19 = 0, NULL, CONCAT('customer', seq, '@example.com')),
       IF(seq % 5 = 0, NULL, CONCAT('Appointment ', seq, ': customer asked about replacement windows, ',
          'two-storey colonial, wants a quote for ', 4 + seq % 20, ' double-hung units; call before visiting. ',
          REPEAT('x', seq % 60))),
       :base + INTERVAL (seq DIV 3) SECOND
FROM seq_1_to_{{n}}
"""


def ensure_database(url: str) -> None:
    """Create the source database if it is missing, so the generator runs on a fresh server."""
    server = url.rsplit("/", 1)[0]
    admin = create_engine(f"{server}/", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        db = sa.engine.make_url(url).database
        c.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4"))
    admin.dispose()


def generate(url: str, n: int) -> None:
    ensure_database(url)
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text(f"DROP TABLE IF EXISTS {TABLE}"))
        c.execute(sa.text(DDL))
        c.execute(sa.text(FILL.format(n=int(n))), {"base": BASE})
    engine.dispose()


def touch(url: str, percent: float, round_no: int) -> int:
    """Change `percent`% of the rows (a different slice each round), moving their cursor past every
    existing one as a real edit would, spread over a day as a day's edits are (so the next delta
    run's lookback sees a few of them, not all); returns how many rows changed."""
    step = max(1, round(100 / percent))
    engine = create_engine(url)
    with engine.begin() as c:
        hi = c.execute(sa.text(f"SELECT MAX(updated_at) FROM {TABLE}")).scalar_one()
        n = c.execute(sa.text(
            f"UPDATE {TABLE} SET notes = CONCAT('edited in round ', :r), duration = duration + 15, "
            f"updated_at = :t + INTERVAL (id % 86400) SECOND WHERE id % :step = :slot"),
            {"r": round_no, "t": hi + dt.timedelta(hours=1), "step": step, "slot": round_no % step}).rowcount
    engine.dispose()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", default="mysql+pymysql://root:@127.0.0.1:3306/srbench")
    ap.add_argument("--rows", type=int, default=100_000)
    a = ap.parse_args()
    generate(a.url, a.rows)
    print(f"{a.rows:,} rows in {TABLE}")


if __name__ == "__main__":
    main()
