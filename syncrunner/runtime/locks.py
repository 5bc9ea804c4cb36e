"""Run locks held in the target database (DESIGN.md §10), so that every process on every machine
sharing the target agrees:

* one run per (crm, entity) at a time: the *entity lock*;
* at most SYNCRUNNER_MAX_CONCURRENT runs at a time across the cluster: N *slot locks*, a run takes a
  free one or waits.

PostgreSQL: session advisory locks; MySQL/MariaDB: GET_LOCK; SQLite: flock()ed files next to the
database file. Server-side locks die with their session, so a killed process never leaves one
behind; each is held on a dedicated connection, because the run's main connection is busy in chunk
transactions and a dropped main connection must not silently free the lock.

The entity lock is always taken before a slot, so a run waiting for a slot never blocks one that
holds a slot (no deadlock)."""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import random
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import sqlalchemy as sa

from syncrunner.runtime.settings import max_concurrent_from_env, slot_wait_from_env

log = logging.getLogger("syncrunner.locks")

POLL_SECONDS = 0.25
_SLOT_CLASS = 0x5352_0001  # PostgreSQL two-key advisory lock namespace for slots ("SR" 1)


class LockBusy(RuntimeError):
    """The lock is held elsewhere and the wait (if any) ran out."""


class LockLost(RuntimeError):
    """A held lock vanished (its session died) and could not be taken back."""


class LockUnavailable(RuntimeError):
    """The lock cannot be taken at all (a SQLite target's lock file this user may not open)."""


def _digest64(text: str) -> int:
    """A stable signed 64-bit lock key (PostgreSQL's bigint advisory key space)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


# -- one lock backend per dialect ------------------------------------------------------------------
class _Backend:
    """Try-lock / unlock / ping on one dedicated session. Names are logical ("entity:crm.x", "slot:0")."""

    def try_lock(self, name: str) -> bool: raise NotImplementedError
    def unlock(self, name: str) -> None: raise NotImplementedError
    def alive(self) -> bool: return True
    def reconnect(self) -> None: pass
    def close(self) -> None: pass


class _ServerBackend(_Backend):
    """Locks bound to a database session: one autocommit connection holds them all."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.conn: sa.Connection | None = None

    def _c(self) -> sa.Connection:
        if self.conn is None:
            self.conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self.conn

    def alive(self) -> bool:
        try:
            self._c().execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def reconnect(self) -> None:
        self.close()

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except sa.exc.SQLAlchemyError:
                pass
            self.conn = None


class _PostgresBackend(_ServerBackend):
    """Advisory locks are scoped to the current database, so unrelated databases never collide."""

    @staticmethod
    def _args(name: str) -> tuple[str, dict]:
        kind, _, rest = name.partition(":")
        if kind == "slot":
            return ":a, :b", {"a": _SLOT_CLASS, "b": int(rest)}
        return "CAST(:a AS bigint)", {"a": _digest64(name)}

    def try_lock(self, name: str) -> bool:
        args, params = self._args(name)
        return bool(self._c().execute(sa.text(f"SELECT pg_try_advisory_lock({args})"), params).scalar())

    def unlock(self, name: str) -> None:
        args, params = self._args(name)
        self._c().execute(sa.text(f"SELECT pg_advisory_unlock({args})"), params)


class _MysqlBackend(_ServerBackend):
    """GET_LOCK names are server-wide: the database name is part of the lock name."""

    def __init__(self, engine: sa.Engine):
        super().__init__(engine)
        self.prefix = f"syncrunner:{engine.url.database}:"

    def _name(self, name: str) -> str:
        full = self.prefix + name
        return full if len(full) <= 64 else "syncrunner:" + hashlib.sha1(full.encode()).hexdigest()

    def try_lock(self, name: str) -> bool:
        return self._c().execute(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": self._name(name)}).scalar() == 1

    def unlock(self, name: str) -> None:
        self._c().execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": self._name(name)})


class _FileBackend(_Backend):
    """flock()ed files in <database>.locks/: released by the kernel when the process dies.

    Whoever may write the database may take its locks: the folder and its files take the database
    file's owner, group and mode (as SQLite gives its -wal and -shm files), brought in line by
    every run of their owner or of root. A user who may not open them gets LockUnavailable."""

    def __init__(self, db_path: str):
        self.db = Path(db_path)
        self.dir = Path(f"{db_path}.locks")
        self.files: dict[str, int] = {}
        self.ready = False

    def try_lock(self, name: str) -> bool:
        safe = hashlib.sha1(name.encode()).hexdigest()[:12]
        label = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)[:80]
        path = self.dir / f"{label}-{safe}.lock"
        try:
            like = self._prepare()
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise LockUnavailable(self._why(path, e)) from None
        _follow(fd, like)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.files[name] = fd
        return True

    def _prepare(self) -> os.stat_result | None:
        """Create the lock folder; once per run, give it and its files the database's permissions.
        Returns the database file's stat (None before the first run creates it)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            like = self.db.stat()
        except FileNotFoundError:
            return None
        if not self.ready:
            self.ready = True
            _follow(self.dir, like, folder=True)
            for entry in os.scandir(self.dir):
                if entry.name.endswith(".lock"):
                    _follow(entry.path, like)
        return like

    def _why(self, path: Path, e: OSError) -> str:
        if isinstance(e, PermissionError):
            return (f"permission denied on the run lock {path}: every user who runs syncrunner against "
                    f"{self.db} needs write access to {self.dir} and its files (they take the database "
                    "file's owner, group and mode at its owner's or root's next run)")
        return f"cannot create the run lock {path}: {e.strerror or e}"

    def unlock(self, name: str) -> None:
        fd = self.files.pop(name, None)
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def close(self) -> None:
        for name in list(self.files):
            self.unlock(name)


def _follow(target: str | Path | int, like: os.stat_result | None, folder: bool = False) -> None:
    """Give a lock file (a path or an open descriptor) or the lock folder the database file's
    owner, group and mode (a folder: x wherever r). Only its owner or root can; for anyone else
    this leaves it as it is."""
    if like is None:
        return
    mode = stat.S_IMODE(like.st_mode) & 0o666
    if folder:
        mode |= (mode & 0o444) >> 2
    try:
        st = os.stat(target)
        me = os.geteuid()
        if me == 0 and (st.st_uid, st.st_gid) != (like.st_uid, like.st_gid):
            os.chown(target, like.st_uid, like.st_gid)
        elif me == st.st_uid and st.st_gid != like.st_gid:
            os.chown(target, -1, like.st_gid)  # allowed when the owner is in that group
        if me in (0, st.st_uid) and stat.S_IMODE(st.st_mode) != mode:
            os.chmod(target, mode)
    except OSError as e:
        log.debug("lock permissions of %s left as they are: %s", target, e)


class _NoBackend(_Backend):
    """An in-memory SQLite target: only this process can see it."""

    def try_lock(self, name: str) -> bool: return True
    def unlock(self, name: str) -> None: pass


def _backend_for(engine: sa.Engine) -> _Backend:
    name = engine.dialect.name
    if name == "postgresql":
        return _PostgresBackend(engine)
    if name in ("mysql", "mariadb"):
        return _MysqlBackend(engine)
    if name == "sqlite":
        db = engine.url.database
        return _FileBackend(str(Path(db).resolve())) if db and db != ":memory:" else _NoBackend()
    raise ValueError(f"no run lock for target database {name!r}")


# -- what a run holds ---------------------------------------------------------------------------------
@dataclass
class GuardState:
    entity: bool = False
    slot: int | None = None


class RunGuard:
    """The entity lock plus one concurrency slot for one run. Thread-safe: the heartbeat thread
    checks liveness while the main thread runs chunks."""

    def __init__(self, engine: sa.Engine, crm: str, entity: str, *, max_concurrent: int | None = None):
        self.backend = _backend_for(engine)
        self.entity_name = f"entity:{crm}.{entity}"
        self.max_concurrent = max_concurrent_from_env() if max_concurrent is None else max_concurrent
        self.state = GuardState()
        self.lost = False          # set by check() when the lock session died
        self._mutex = threading.Lock()

    # -- taking ------------------------------------------------------------------------------------
    def acquire(self, wait: float, slot_wait: float | None = None,
                describe_holder: Callable[[], str] | None = None) -> None:
        """Take the entity lock (waiting up to `wait` seconds), then a free slot (waiting up to
        `slot_wait`, default SYNCRUNNER_SLOT_WAIT). Raises LockBusy, holding nothing."""
        try:
            if not _poll(lambda: self._take_entity(), wait):
                holder = describe_holder() if describe_holder else ""
                raise LockBusy(f"already running{holder}" + (f"; waited {wait:g}s" if wait else ""))
            slot_wait = slot_wait_from_env() if slot_wait is None else slot_wait
            if not _poll(self._take_slot, slot_wait, log_after=1.0,
                         log_msg=f"waiting for a free run slot (limit {self.max_concurrent})"):
                raise LockBusy(f"no free run slot: {self.max_concurrent} runs already running "
                               f"(SYNCRUNNER_MAX_CONCURRENT); waited {slot_wait:g}s")
        except BaseException:
            self.release()
            raise

    def _take_entity(self) -> bool:
        with self._mutex:
            self.state.entity = self.backend.try_lock(self.entity_name)
            return self.state.entity

    def _take_slot(self) -> bool:
        if self.max_concurrent <= 0:
            return True
        with self._mutex:
            for i in random.sample(range(self.max_concurrent), self.max_concurrent):
                if self.backend.try_lock(f"slot:{i}"):
                    self.state.slot = i
                    return True
        return False

    # -- keeping --------------------------------------------------------------------------------------
    def _session_ok(self) -> bool:
        """Caller holds the mutex. A failed ping is sticky: a server session that died took its
        locks with it, even if the connection object would quietly reconnect next time."""
        if not self.lost and self.state.entity and not self.backend.alive():
            self.lost = True
        return not self.lost

    def check(self) -> bool:
        """Called by the heartbeat: is the lock session still there? Marks the guard lost if not."""
        with self._mutex:
            return self._session_ok()

    def reacquire(self, slot_wait: float) -> None:
        """After the target dropped connections (say it restarted): if the lock session died, take
        both locks back on a new session, or raise LockLost if another run got the entity lock
        meanwhile. A no-op while the locks are still held (file locks, a surviving session)."""
        with self._mutex:
            if self._session_ok():
                return
            self.backend.reconnect()
            self.state = GuardState()
        if not self._take_entity():
            raise LockLost(f"lost the lock on {self.entity_name[7:]}: another run took it while the "
                           "target was unreachable")
        if not _poll(self._take_slot, slot_wait):
            self.release()
            raise LockLost("lost the run slot and found no free one again")
        self.lost = False

    # -- letting go -----------------------------------------------------------------------------------
    def release(self) -> None:
        with self._mutex:
            try:
                if self.state.slot is not None:
                    self.backend.unlock(f"slot:{self.state.slot}")
                if self.state.entity:
                    self.backend.unlock(self.entity_name)
            except sa.exc.SQLAlchemyError as e:  # the session is gone: so are its locks
                log.debug("unlock failed (session gone, locks with it): %s", e)
            finally:
                self.state = GuardState()
                self.backend.close()


def entity_lock_free(engine: sa.Engine, crm: str, entity: str) -> bool:
    """True when no live process holds (crm, entity)'s lock: proves a `running` row is dead.
    Takes the lock for an instant to find out."""
    guard = RunGuard(engine, crm, entity, max_concurrent=0)
    try:
        return guard._take_entity()
    finally:
        guard.release()


def _poll(attempt: Callable[[], bool], wait: float, *, log_after: float | None = None,
          log_msg: str = "") -> bool:
    """attempt() until it succeeds or `wait` seconds pass (0 = once)."""
    deadline = time.monotonic() + max(wait, 0.0)
    logged = False
    start = time.monotonic()
    while True:
        if attempt():
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        if log_after is not None and not logged and now - start >= log_after:
            log.info("%s", log_msg)
            logged = True
        time.sleep(min(POLL_SECONDS * (0.5 + random.random()), max(deadline - now, 0.01)))
