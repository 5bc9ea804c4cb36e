"""Templates must not run code (issue 21.1): a spec is untrusted text, and `syncrunner lint` runs on
pull requests. Sandbox-escape payloads from the Jinja SSTI literature, placed in a SQL query, an HTTP
request body, a field `expr` and a `validate` rule, go through `lint`, `plan`, `run --dry-run` and
`run` as real subprocesses: each is refused with `file:line: key: message` before anything renders
(no marker file, no target database, no HTTP request). Behind that static check, the sandboxed
environment stops the same payloads at render time."""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from syncrunner.core import templating
from syncrunner.core.templatecheck import TemplateRefused
from syncrunner.core.templating import ENV
from tests.fakes import FakeHubSpot
from tests.helpers import cli, make_source

SPECS = Path(__file__).resolve().parent.parent / "specs"
TOKEN = "pat-na1-sandbox-test-token"
X = "X"        # stands for a variable the place provides (since, window, a record field)
CMD = "CMD"    # stands for the shell command that creates the payload's marker file

# Expressions: work in every place. Each one ran the command (or leaked internals) before the sandbox.
EXPRESSIONS = {
    "subclasses": "(X.__class__.__mro__[-1].__subclasses__() | selectattr('__name__', 'eq', '_wrap_close')"
                  " | first).__init__.__globals__['system']('CMD')",
    "map_attribute": "(X.__class__.__mro__[-1].__subclasses__() | selectattr('__name__', 'eq', '_wrap_close')"
                     " | map(attribute='__init__.__globals__') | first).system('CMD')",
    "cycler": "cycler.__init__.__globals__.os.system('CMD')",
    "lipsum": "lipsum.__globals__['os'].system('CMD')",
    "namespace": "namespace.__init__.__globals__.os.system('CMD')",
    "joiner": "joiner.__init__.__globals__.os.popen('CMD').read()",
    "self_context": "self._TemplateReference__context.cycler.__init__.__globals__.os.system('CMD')",
    "str_mro": "(''.__class__.__mro__[1].__subclasses__() | selectattr('__name__', 'eq', '_wrap_close')"
               " | first).__init__.__globals__.system('CMD')",
    "attr_escaped": "((((X|attr('\\x5f\\x5fclass\\x5f\\x5f')|attr('\\x5f\\x5fmro\\x5f\\x5f'))[-1]"
                    "|attr('\\x5f\\x5fsubclasses\\x5f\\x5f'))()|selectattr('\\x5f\\x5fname\\x5f\\x5f', 'eq',"
                    " '_wrap_close')|first|attr('\\x5f\\x5finit\\x5f\\x5f')|attr('\\x5f\\x5fglobals\\x5f\\x5f'))"
                    "['system'])('CMD')",
    "request_attr": "request|attr('__class__')",
    "config": "config.__class__.__init__.__globals__['__builtins__']['__import__']('os').system('CMD')",
    "dunder_item": "X['__class__']['__mro__']",
    "format_string": "'{0.__class__.__mro__}'.format(X)",
    "range_abuse": "range(10**9) | list | length",
}
# Statements: templates only (SQL queries, HTTP request strings).
STATEMENTS = {
    "for_subclasses": "{% for c in X.__class__.__mro__[-1].__subclasses__() %}{% if c.__name__ == '_wrap_close' %}"
                      "{{ c.__init__.__globals__['system']('CMD') }}{% endif %}{% endfor %}",
    "set": "{% set _ = cycler.__init__.__globals__.os.system('CMD') %}",
    "namespace_set": "{% set ns = namespace(x=1) %}{% set ns.x = lipsum.__globals__.os.system('CMD') %}",
}

HEAD = "crm: sandbox\nentity: {entity}\nsource:\n"
TARGET = "target:\n  table: {entity}\n  key: [id]\nfields:\n  id: {{from: id, type: integer, required: true}}\n"
SQL_SPEC = HEAD + """\
  kind: sql
  url: ${{ITEM_DB_URL}}
  query: |-
    SELECT id, name, updated_at FROM item
    {query}
  cursor: updated_at
  key: id
""" + TARGET + """\
  name: {{from: name, type: string}}
  updated_at: {{from: updated_at, type: datetime, required: true}}
{extra}"""
HTTP_SPEC = HEAD + """\
  kind: http
  base_url: ${{HUBSPOT_BASE_URL}}
  auth: {{type: bearer, token: "${{HUBSPOT_TOKEN}}"}}
  request:
    method: POST
    path: /crm/v3/objects/contacts/search
    json: |
      {body}{{"limit": 100, "properties": ["email", "lastmodifieddate"]}}
  records: results
  pagination: {{type: cursor, next: paging.next.after, param: after}}
  cursor: properties.lastmodifieddate
  key: id
""" + TARGET + """\
  lastmodifieddate: {{from: properties.lastmodifieddate, type: datetime, required: true}}
"""

# place -> (the variable payloads use, the key a refusal names)
PLACES = {
    "query": ("since", "source.query"),
    "http_body": ("window", "source.request.json"),
    "expr": ("name", "fields.evil.expr"),
    "rule": ("name", "validate.0.rule"),
}


def payloads(place: str) -> dict[str, str]:
    """The payloads for a place: expressions (as an {% if %} in templates) and, in templates, statements."""
    if place in ("expr", "rule"):
        return dict(EXPRESSIONS)
    return {**{k: "{% if " + e + " %}{% endif %}" for k, e in EXPRESSIONS.items()}, **STATEMENTS}


def spec_text(place: str, entity: str, payload: str) -> str:
    if place == "http_body":
        return HTTP_SPEC.format(entity=entity, body=payload)
    extra = {"query": "",
             "expr": f"  evil:\n    type: string\n    expr: |-\n      {payload}\n",
             "rule": f"validate:\n  - message: refused\n    rule: |-\n      {payload}\n"}[place]
    return SQL_SPEC.format(entity=entity, query=payload if place == "query" else "", extra=extra)


def key_line(text: str, key: str) -> int:
    """The line of a refusal's key in the spec text (the line `lint` must name)."""
    want = key.split(".")[-1] + ":"
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.strip().startswith(want))


def write_specs(folder: Path, place: str, markers: Path) -> dict[str, tuple[Path, int]]:
    """One spec per payload; returns name -> (spec path, the line its refusal must name)."""
    variable, key = PLACES[place]
    folder.mkdir()
    out = {}
    for name, payload in payloads(place).items():
        command = f"touch {markers / f'{place}-{name}'}"
        text = spec_text(place, name, payload.replace(X, variable).replace(CMD, command))
        path = folder / f"{name}.yaml"
        path.write_text(text)
        out[name] = (path, key_line(text, key))
    return out


@pytest.fixture
def world(tmp_path):
    """A SQLite source with a few rows, a fake HubSpot with a few contacts, a target that must stay absent."""
    source = f"sqlite:///{tmp_path / 'source.db'}"
    make_source(source, 3).dispose()
    with FakeHubSpot(token=TOKEN, search_rate_limit=None) as fake:
        fake.seed("contacts", 3, dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))
        fake.reset_log()
        target = tmp_path / "target.db"
        env = {"ITEM_DB_URL": source, "SYNCRUNNER_TARGET_URL": f"sqlite:///{target}",
               "HUBSPOT_BASE_URL": fake.base_url, "HUBSPOT_TOKEN": TOKEN}
        yield fake, target, env


def assert_refused(res: subprocess.CompletedProcess, specs: dict[str, tuple[Path, int]], key: str, what: str) -> None:
    output = res.stdout + res.stderr
    assert res.returncode != 0, f"{what} exited 0:\n{output}"
    assert "Traceback" not in output, output
    for name, (path, line) in specs.items():
        assert f"{path}:{line}: {key}: template refused" in output, f"{what}: {name} not refused:\n{output}"


@pytest.mark.parametrize("place", list(PLACES))
def test_escape_payloads_are_refused_by_every_command_before_anything_renders(tmp_path, world, place):
    fake, target, env = world
    markers = tmp_path / "markers"
    markers.mkdir()
    specs = write_specs(tmp_path / "specs", place, markers)
    key = PLACES[place][1]
    env = {**os.environ, **env}
    folder = tmp_path / "specs"
    assert_refused(cli("lint", folder, env=env, timeout=120), specs, key, "lint")
    for name, (path, line) in specs.items():
        assert_refused(cli("plan", path, env=env, timeout=120), {name: (path, line)}, key, f"plan {name}")
    assert_refused(cli("run", folder, "--dry-run", env=env, timeout=120), specs, key, "run --dry-run")
    assert_refused(cli("run", folder, env=env, timeout=120), specs, key, "run")
    assert sorted(p.name for p in markers.iterdir()) == []   # no command ran
    assert not target.exists()                               # nothing was written, not even SyncHistory
    assert fake.count() == 0                                 # no request was sent


def test_a_tie_break_request_is_checked_before_lint_renders_it(tmp_path):
    """Lint renders a tie_break for a sample tie (a spec check); a refused template is never rendered."""
    from syncrunner.spec.load import check_spec

    marker = tmp_path / "pwned"
    text = (SPECS / "hubspot" / "contacts.yaml").read_text().replace(
        '"sorts": [{"propertyName": "hs_object_id"',
        "{% if cycler.__init__.__globals__.os.system('touch " + str(marker) + "') %}{% endif %}"
        '"sorts": [{"propertyName": "hs_object_id"', 1)
    assert "cycler" in text
    (tmp_path / "contacts.yaml").write_text(text)
    spec, problems = check_spec(tmp_path / "contacts.yaml", {"HUBSPOT_TOKEN": TOKEN}, strict_env=False)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if s.strip() == "tie_break:") + 1
    assert spec is None and not marker.exists()
    assert any(str(p).startswith(f"{tmp_path / 'contacts.yaml'}:{line}: source.tie_break.json: template refused")
               for p in problems), problems


# -- the sandbox behind the static check ---------------------------------------------------------------
def _render_all_ways(payload: str, marker: Path) -> list[Exception]:
    """Render the payload straight through the environment, skipping the static check."""
    payload = payload.replace(X, "name").replace(CMD, f"touch {marker}")
    errors = []
    attempts = [lambda: ENV.from_string("{% if " + payload + " %}{% endif %}").render(name="n", since=None),
                lambda: ENV.compile_expression(payload, undefined_to_none=True)(name="n")]
    for attempt in attempts:
        try:
            attempt()
        except Exception as e:  # noqa: BLE001 - every refusal is collected and judged below
            errors.append(e)
    return errors


@pytest.mark.parametrize("name", list(EXPRESSIONS))
def test_sandbox_stops_each_payload_at_render_time_even_without_the_static_check(tmp_path, name):
    import jinja2
    marker = tmp_path / "pwned"
    errors = _render_all_ways(EXPRESSIONS[name], marker)
    assert not marker.exists()
    assert len(errors) == 2, errors
    for e in errors:  # a refusal, or Jinja's "no filter named 'attr'/'map'", never a silent ''
        assert isinstance(e, (TemplateRefused, jinja2.TemplateError)), repr(e)
        assert "refused" in str(e) or "No filter named" in str(e), str(e)


@pytest.mark.parametrize("payload", ["'x' * 10**9", "[1] * 10**9", "(9**999)**999", "'%999999999s' % 'x'",
                                     "'x' * 100000 * 100000"])
def test_resource_abuse_is_refused_at_render_time(payload):
    with pytest.raises(TemplateRefused, match="refused"):
        ENV.compile_expression(payload)()


def test_a_run_fails_clearly_when_a_refused_expression_slips_past_the_checks(tmp_path, monkeypatch):
    """Were the static check missed (here: switched off), the sandboxed mapping stops the expression,
    and the run fails instead of dead-lettering records one by one."""
    from syncrunner.runtime.engine import run_spec
    from syncrunner.runtime.strategy import RunOptions
    from syncrunner.spec.load import load_spec

    marker = tmp_path / "pwned"
    source = f"sqlite:///{tmp_path / 'source.db'}"
    make_source(source, 3).dispose()
    payload = "name.__class__.__mro__[-1].__subclasses__()[0].__init__.__globals__['os'].system('touch " \
        + str(marker) + "')"  # only record fields: the spec check that runs the query's columns passes
    (tmp_path / "s.yaml").write_text(spec_text("expr", "slipped", payload))
    monkeypatch.setattr(templating, "_refusals", lambda node: [])
    spec = load_spec(tmp_path / "s.yaml", {"ITEM_DB_URL": source})
    with pytest.raises(TemplateRefused, match="access to attribute '__class__'"):
        run_spec(spec, RunOptions(dry_run=True), f"sqlite:///{tmp_path / 't.db'}")
    assert not marker.exists()


def test_mapping_rules_stop_at_render_time_and_fail_rather_than_dead_letter(tmp_path, monkeypatch):
    from syncrunner.core.mapping import Mapper
    from syncrunner.spec.load import load_spec

    marker = tmp_path / "pwned"
    payload = EXPRESSIONS["cycler"].replace(CMD, f"touch {marker}")
    (tmp_path / "s.yaml").write_text(spec_text("rule", "slipped", payload))
    monkeypatch.setattr(templating, "_refusals", lambda node: [])
    mapper = Mapper(load_spec(tmp_path / "s.yaml", {"ITEM_DB_URL": "sqlite://"}))
    with pytest.raises(TemplateRefused, match="calling|__init__"):
        mapper.map({"id": 1, "name": "n", "updated_at": dt.datetime(2025, 1, 1)})
    assert not marker.exists()


def test_mapping_workers_compile_expressions_in_the_same_sandbox(tmp_path, monkeypatch):
    """A mapping worker builds the spec's Mapper itself (from a pickled spec that was never linted
    in that process): the static check refuses there too, and behind it the sandbox."""
    mapworker = pytest.importorskip("syncrunner.runtime.parallel_worker")
    from syncrunner.spec.load import load_spec

    marker = tmp_path / "pwned"
    payload = EXPRESSIONS["config"].replace(CMD, f"touch {marker}")
    (tmp_path / "s.yaml").write_text(spec_text("expr", "worker", "name"))
    spec = load_spec(tmp_path / "s.yaml", {"ITEM_DB_URL": "sqlite://"})
    evil = dataclasses.replace(spec.fields["evil"], expr=payload)
    spec.fields["evil"] = evil
    setup = mapworker.WorkerSetup(spec, skip_validation=False, batch_size=10, run_id=1, copy_text=False)
    with pytest.raises(TemplateRefused, match="attribute access to '__class__'"):
        mapworker.Worker(setup)
    monkeypatch.setattr(templating, "_refusals", lambda node: [])
    worker = mapworker.Worker(setup)
    job = mapworker.Job(records=[{"id": 1, "name": "n", "updated_at": dt.datetime(2025, 1, 1)}],
                        skip=frozenset(), fps=None, fingerprint=False, want_keys=False)
    with pytest.raises(TemplateRefused, match="access to attribute '__class__'"):
        worker.map(job)
    assert not marker.exists()


# -- what templates may still do -----------------------------------------------------------------------
def test_every_spec_in_the_repository_lints_clean():
    res = subprocess.run([sys.executable, "-m", "syncrunner.cli", "lint", str(SPECS)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "template refused" not in res.stdout + res.stderr


def test_the_documented_vocabulary_works():
    """Each function, filter and test the spec reference lists, as its usage line writes it."""
    ctx = {"since": dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), "s": "Ab cD", "x": 4, "y": 1,
           "xs": [3, 1, 2], "a": None, "b": "b", "date": dt.date(2025, 1, 2), "time": dt.time(3, 4)}
    for table in (templating.FUNCTIONS, templating.FILTERS, templating.TESTS):
        for name, helper in table.items():
            source = helper.usage.replace(", ...", "")
            assert templating.expression_problems(source) == [], name
            templating.compile_expression(source)(**ctx)
    assert templating.compile_expression("coalesce(a, b)")(**ctx) == "b"
    assert templating.compile_expression("since | epoch_ms")(**ctx) == 1735787045000


@pytest.mark.parametrize("template, context, expected", [
    ("{% for v in xs %}{{ loop.index }}:{{ v | upper }}{% if not loop.last %},{% endif %}{% endfor %}",
     {"xs": ["a", "b"]}, "1:A,2:B"),
    ("{% set n = xs | length %}{{ n * 2 }} {{ d['k'] }} {{ d.k }} {{ xs[0] }} {{ xs[-1] }} {{ xs[:1] | join }}",
     {"xs": ["a", "b"], "d": {"k": "v"}}, "4 v v a b a"),
    ("{{ since | iso if since else 'all' }} {{ 'x' * 3 }} {{ 2 ** 10 }} {{ 7 % 3 }}", {"since": None}, "all xxx 1024 1"),
])
def test_ordinary_templates_render(template, context, expected):
    assert templating.template_problems(template, tuple(context)) == []
    assert templating.compile_text(template).render(**context) == expected


@pytest.mark.parametrize("source, message", [
    ("x.__class__", "attribute access to '__class__'"),
    ("x['_private']", "item access to '_private'"),
    ("x[('_' ~ '_class__')]", "computed subscripts"),
    ("x.mro", "attribute access to 'mro'"),
    ("x.upper()", "calling method 'upper'"),
    ("x | attr('y')", "filter 'attr' is not available"),
    ("x | map(attribute='y')", "filter 'map' is not available"),
    ("x | join(attribute='y')", "attribute= is refused"),
    ("x is callable", "test 'callable' is not available"),
    ("range(3)", "calling 'range'"),
])
def test_lint_messages_name_what_is_refused(source, message):
    problems = templating.expression_problems(source)
    assert any(message in p for p in problems), problems
