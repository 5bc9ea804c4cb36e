"""Running a folder of specs: dependency order, selection, one failure does not stop the others."""
from __future__ import annotations

from click.testing import CliRunner

from syncrunner.cli import EXIT_FAILED, main
from tests.helpers import history, make_source, write_spec


def _spec_text(tmp_path, entity, after=(), table="item"):
    text = write_spec(tmp_path).read_text()
    text = text.replace("entity: items", f"entity: {entity}\nafter: [{', '.join(after)}]")
    text = text.replace("table: items", f"table: t_{entity}").replace("FROM item", f"FROM {table}")
    return text


def test_folder_runs_in_dependency_order_and_survives_a_failure(tmp_path, mysql_url, sqlite_url):
    make_source(mysql_url, 40)
    folder = tmp_path / "specs"
    folder.mkdir()
    # file names sort opposite to the dependencies
    (folder / "a_children.yaml").write_text(_spec_text(tmp_path, "children", after=["parents"]))
    (folder / "b_parents.yaml").write_text(_spec_text(tmp_path, "parents", after=["roots"]))
    (folder / "c_roots.yaml").write_text(_spec_text(tmp_path, "roots"))
    (folder / "d_broken.yaml").write_text(_spec_text(tmp_path, "broken", table="no_such_table"))
    (tmp_path / "items.yaml").unlink()
    res = CliRunner().invoke(main, ["run", str(folder), "--target", sqlite_url], env={"ITEM_DB_URL": mysql_url})
    assert res.exit_code == EXIT_FAILED
    order = [h.sync_type for h in history(sqlite_url)]
    assert order.index("roots") < order.index("parents") < order.index("children")
    statuses = {h.sync_type: h.status for h in history(sqlite_url)}
    assert statuses == {"roots": "success", "parents": "success", "children": "success", "broken": "failed"}
    lines = res.output.splitlines()
    header = next(i for i, l in enumerate(lines) if l.startswith("entity"))
    assert "seconds" in lines[header] and "unchanged" in lines[header]
    summary = {l.split()[0]: l.split()[1] for l in lines[header + 1:] if l.startswith("testcrm.")}
    assert summary == {"testcrm.roots": "success", "testcrm.parents": "success",
                       "testcrm.children": "success", "testcrm.broken": "failed"}


def test_only_and_exclude(tmp_path, mysql_url, sqlite_url):
    make_source(mysql_url, 5)
    folder = tmp_path / "specs"
    folder.mkdir()
    for name in ("one", "two", "three"):
        (folder / f"{name}.yaml").write_text(_spec_text(tmp_path, name))
    env = {"ITEM_DB_URL": mysql_url}
    CliRunner().invoke(main, ["run", str(folder), "--target", sqlite_url, "--only", "two", "--only", "testcrm.three"], env=env)
    assert sorted(h.sync_type for h in history(sqlite_url)) == ["three", "two"]
    CliRunner().invoke(main, ["run", str(folder), "--target", sqlite_url, "--exclude", "two"], env=env)
    assert sorted(h.sync_type for h in history(sqlite_url)) == ["one", "three", "three", "two"]
    bad = CliRunner().invoke(main, ["run", str(folder), "--target", sqlite_url, "--only", "nope"], env=env)
    assert bad.exit_code == 2 and "no spec for nope" in bad.output


def test_dependency_cycle_is_refused(tmp_path, mysql_url, sqlite_url):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "x.yaml").write_text(_spec_text(tmp_path, "x", after=["y"]))
    (folder / "y.yaml").write_text(_spec_text(tmp_path, "y", after=["x"]))
    res = CliRunner().invoke(main, ["run", str(folder), "--target", sqlite_url], env={"ITEM_DB_URL": mysql_url})
    assert res.exit_code == 2 and "cycle" in res.output
