"""`pip install .` gives a working tool: a wheel built from the checkout, installed into a fresh
virtual environment outside it, lints the shipped specs and runs a SQLite sync.

The wheel is built from a copy of the package (building in place would leave build/ and
*.egg-info in the checkout). The fresh environment gets only the wheel; the dependencies come
from this test's own environment through a .pth line (appended after its own site-packages, so
the installed syncrunner, not the checkout's, is the one imported)."""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SPEC = """\
# yaml-language-server: $schema=../schemas/spec.schema.json
crm: shop
entity: orders
source:
  kind: sql
  url: ${SHOP_DB_URL}
  query: SELECT id, customer, updated_at FROM orders
  cursor: updated_at
  key: id
target:
  table: shop_orders
  key: [id]
fields:
  id:         {from: id, type: integer, required: true}
  customer:   {from: customer, type: string}
  updated_at: {from: updated_at, type: datetime, required: true}
"""


def _run(*args: object, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh venv with syncrunner installed from a wheel (not editable)."""
    work = tmp_path_factory.mktemp("packaging")
    src = work / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    shutil.copytree(ROOT / "syncrunner", src / "syncrunner",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    # as `pip install .` does: in an isolated build environment with the pyproject's build backend
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", work / "dist", src, cwd=work)
    assert built.returncode == 0, built.stdout + built.stderr
    wheel, = (work / "dist").glob("syncrunner-*.whl")

    venv = work / "venv"
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                     cwd=work).stdout.strip())
    (site / "deps-from-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
                wheel, cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv / "bin"


def test_the_installed_package_is_the_wheel_not_the_checkout(installed, tmp_path):
    where = _run(installed / "python", "-c", "import syncrunner, sys; print(syncrunner.__file__)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.parent), where.stdout
    assert (installed.parent / "lib").exists()


def test_installed_tool_lints_the_shipped_specs(installed, tmp_path):
    res = _run(installed / "syncrunner", "lint", ROOT / "specs", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "0 error(s)" in res.stdout


def test_installed_tool_runs_a_sqlite_sync(installed, tmp_path):
    source = tmp_path / "shop.db"
    with sqlite3.connect(source) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, updated_at TEXT)")
        db.executemany("INSERT INTO orders VALUES (?, ?, ?)",
                       [(i, f"customer {i}", f"2025-03-01 09:{i:02d}:00") for i in range(1, 31)])
    spec = tmp_path / "specs" / "orders.yaml"
    spec.parent.mkdir()
    spec.write_text(SPEC)
    target = tmp_path / "target.db"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHOP_DB_URL": f"sqlite:///{source}"}
    res = _run(installed / "syncrunner", "run", spec, "--target", f"sqlite:///{target}", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    with sqlite3.connect(target) as db:
        assert db.execute("SELECT COUNT(*) FROM shop_orders").fetchone() == (30,)
        assert db.execute("SELECT status FROM sync_history").fetchall() == [("success",)]


def test_installed_tool_lints_a_schedules_file(installed, tmp_path):
    """schedules.schema.json ships as package data: the installed tool checks a schedules file by it."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "orders.yaml").write_text(SPEC)
    schedules = tmp_path / "schedules.yaml"
    good = 'schedules:\n  - name: orders-hourly\n    run: specs/\n    cron: "5 * * * *"\n'
    schedules.write_text(good)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHOP_DB_URL": "sqlite://"}
    res = _run(installed / "syncrunner", "lint", schedules, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    schedules.write_text(good + "    colour: blue\n")  # a key the schedules schema does not allow
    res = _run(installed / "syncrunner", "lint", schedules, cwd=tmp_path, env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stdout + res.stderr
    assert "schedules.yaml:5:" in res.stdout + res.stderr and "colour" in res.stdout + res.stderr
