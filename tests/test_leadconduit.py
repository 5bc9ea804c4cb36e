"""LeadConduit end to end: `syncrunner run specs/leadconduit/` through the CLI into PostgreSQL
against the fake (tests/fakes/leadconduit.py, real loopback HTTP): events paged by after_id with
sort=asc, leads read from the snapshots nested in events, delta runs by id, --start-date through
the API's creation-time filter, auth errors without the key, 429/5xx storms retried."""
from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from syncrunner.cli import main
from tests.fakes import FakeLeadConduit
from tests.helpers import history as history_rows
from tests.helpers import rows

SPECS = Path(__file__).resolve().parent.parent / "specs" / "leadconduit"
API_KEY = "lc-4f1d2e9a7b3c55e0secret"
T0 = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc)
EVENT_COLUMNS = "id, lead_id, type, outcome, flow_name, submitted_at, started_at, expires_at"


@pytest.fixture
def fake():
    with FakeLeadConduit(api_key=API_KEY) as f:
        f.seed(1200, T0, recipients=1, partial_every=50)  # 2,400 events: pages of 1000, 1000, 400
        yield f


def cli(fake: FakeLeadConduit, *args: str, key: str = API_KEY, specs: Path = SPECS):
    env = {"LEADCONDUIT_BASE_URL": fake.base_url, "LEADCONDUIT_API_KEY": key}
    extra = ["--no-progress"] if args[0] == "run" else []
    return CliRunner().invoke(main, [*args[:1], str(specs), *args[1:], *extra], env=env)


def landed_events(url: str) -> list[str]:
    return [r[0] for r in rows(url, "SELECT id FROM leadconduit_events ORDER BY id")]


def expected_leads(fake: FakeLeadConduit) -> dict[str, tuple]:
    """Each lead as its newest event saw it (events are in id order)."""
    out = {}
    for e in fake.events:
        lead = e.body["vars"]["lead"]
        out[lead["id"]] = (lead["email"], lead["phone_1"] or None, lead["state"], e.id, e.body["type"],
                           e.body["outcome"])
    return out


def landed_leads(url: str) -> dict[str, tuple]:
    return {r[0]: tuple(r[1:]) for r in rows(
        url, "SELECT lead_id, email, phone_1, state, last_event_id, last_event_type, last_outcome "
             "FROM leadconduit_leads")}


def history(url: str) -> list[dict]:
    return [dict(r._mapping) for r in history_rows(url)]


def queries(fake: FakeLeadConduit) -> list[dict]:
    return [{k: v[0] for k, v in e.query.items()} for e in fake.log]


def test_folder_run_lands_every_event_and_lead_once(fake, pg_url):
    res = cli(fake, "run", "--target", pg_url)
    assert res.exit_code == 0, res.output
    assert landed_events(pg_url) == [e.id for e in fake.events]  # every event once, nothing else
    assert landed_leads(pg_url) == expected_leads(fake)
    assert len(expected_leads(fake)) == 1200
    first = fake.events[0]
    row, = rows(pg_url, f"SELECT {EVENT_COLUMNS} FROM leadconduit_events WHERE id = :id", id=first.id)
    assert row[:5] == (first.id, first.body["vars"]["lead"]["id"], "source", "success", "Solar leads")
    assert row[5] == row[6] == T0 and row[7] == T0 + dt.timedelta(days=180)
    # partial leads (every 50th): no email, phone "" -> NULL; they land, counted, not dead-lettered
    partial, = rows(pg_url, "SELECT count(*) FROM leadconduit_leads WHERE email IS NULL AND phone_1 IS NULL")
    assert partial == (24,)
    # both entities walk forward: sort=asc, the documented maximum limit, after_id = last id of the page
    sent = queries(fake)
    assert all(q["sort"] == "asc" and q["limit"] == "1000" for q in sent)
    assert len(sent) == 2 * 4  # 1000 + 1000 + 400 + the empty page that ends the listing
    assert [q.get("after_id") for q in sent[:4]] == [None] + [fake.events[i].id for i in (999, 1999, 2399)]
    assert "vars.lead" in sent[4]["include"]  # leads ask only for the snapshot


def test_second_run_reads_only_the_events_after_the_last_id(fake, pg_url):
    assert cli(fake, "run", "--target", pg_url).exit_code == 0
    last = fake.events[-1].id
    leads = [fake.events[i].body["vars"]["lead"] for i in (10, 901, 2000)]
    for lead in leads:  # feedback on three leads: a new snapshot each, with a changed state
        fake.add_event(T0 + dt.timedelta(days=2), "feedback", {**lead, "state": "NM"}, outcome="failure")
    new = fake.seed(5, T0 + dt.timedelta(days=3))
    fake.reset_log()
    res = cli(fake, "run", "--target", pg_url, "--json")
    assert res.exit_code == 0, res.output
    summary = {e["entity"]: e["records"] for e in json.loads(res.stdout[res.stdout.index("{"):])["entities"]}
    events, leads_run = summary["leadconduit.events"], summary["leadconduit.leads"]
    assert (events["created"], events["updated"]) == (3 + 10, 0)
    assert (leads_run["created"], leads_run["updated"]) == (5, 3)
    assert all(q["after_id"] == last for q in queries(fake)[::2])  # each entity starts after the last id
    assert landed_events(pg_url) == [e.id for e in fake.events]
    assert landed_leads(pg_url) == expected_leads(fake)
    assert {landed_leads(pg_url)[lead["id"]][2] for lead in leads} == {"NM"}
    assert all(n in landed_leads(pg_url) for n in new)


def test_events_arriving_during_a_run_land_once(fake, pg_url):
    added = []

    def hook(entity: str, page: int) -> None:
        if page == 2 and not added:  # a lead submitted while the run reads page 2
            added.append(fake.add_lead(T0 + dt.timedelta(days=5)))
    fake.page_hook = hook
    assert cli(fake, "run", "--target", pg_url, "--only", "events").exit_code == 0
    assert landed_events(pg_url) == [e.id for e in fake.events] and len(fake.events) == 2402
    fake.reset_log()
    res = cli(fake, "run", "--target", pg_url, "--only", "events")
    assert res.exit_code == 0 and len(fake.log) == 1 and landed_events(pg_url) == [e.id for e in fake.events]


def spec_copy(tmp_path: Path, drop_params: tuple[str, ...] = ()) -> Path:
    """specs/leadconduit with some request params removed from every spec."""
    folder = tmp_path / "leadconduit"
    folder.mkdir()
    for src in SPECS.glob("*.yaml"):
        data = yaml.safe_load(src.read_text())
        for p in drop_params:
            data["source"]["request"]["params"].pop(p)
        (folder / src.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


def test_the_spec_sorts_ascending_or_the_default_desc_would_skip_events(fake, pg_url, tmp_path):
    """The API's default sort is desc: after_id then returns the NEWEST 1,000 events after the id. A
    spec without sort=asc is caught by sorted_by_cursor on the first page, not silently partial."""
    res = cli(fake, "run", "--target", pg_url, "--only", "events",
              specs=spec_copy(tmp_path, drop_params=("sort",)))
    assert res.exit_code == 1
    assert "records are not in ascending cursor order" in res.output
    assert "nothing was written to the target" in res.output
    assert "sort" not in queries(fake)[0]


def test_start_date_goes_to_the_api_start_filter(fake, pg_url):
    later = fake.seed(20, T0 + dt.timedelta(days=40))  # 2025-04-10
    res = cli(fake, "run", "--target", pg_url, "--start-date", "2025-04-10", "--end-date", "2025-04-10")
    assert res.exit_code == 0, res.output
    sent = queries(fake)[0]
    assert (sent["start"], sent["end"]) == ("2025-04-10T00:00:00+00:00", "2025-04-11T00:00:00+00:00")
    assert landed_events(pg_url) == sorted(e.id for e in fake.events if e.created >= T0 + dt.timedelta(days=40))
    assert set(landed_leads(pg_url)) == set(later)
    run, = [h for h in history(pg_url) if h["sync_type"] == "events"]
    assert run["configuration"]["window"]["start_date"] == "2025-04-10T00:00:00+00:00"
    plan = cli(fake, "plan", "--target", pg_url, "--start-date", "2025-04-10",
               specs=SPECS / "events.yaml")
    assert plan.exit_code == 0, plan.output
    assert "start_date=2025-04-10T00:00:00+00:00" in plan.output
    assert "start=2025-04-10T00%3A00%3A00%2B00%3A00" in plan.output
    fake.reset_log()
    dry = cli(fake, "run", "--target", pg_url, "--start-date", "2025-04-11", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "--start-date 2025-04-11 (the cursor id is an id: the request's start_date filter selects)" in dry.output
    assert all(q["start"] == "2025-04-11T00:00:00+00:00" for q in queries(fake))


def test_start_date_is_refused_when_the_request_cannot_send_it(fake, pg_url, tmp_path):
    folder = spec_copy(tmp_path, drop_params=("start", "end"))
    for command, *more in (("run",), ("run", "--dry-run"), ("plan",)):
        target = folder if command == "run" else folder / "events.yaml"
        res = cli(fake, command, "--target", pg_url, "--start-date", "2025-04-10", *more, specs=target)
        assert res.exit_code == 2, res.output
        error = [line for line in res.output.splitlines() if line.startswith("Error:")]
        assert len(error) == 1 and "events.yaml: --start-date cannot select leadconduit.events" in error[0]
        assert "its cursor id is a string, not a time" in error[0] and "start_date" in error[0]
    assert fake.log == []  # refused before any request
    assert cli(fake, "run", "--target", pg_url, "--full", specs=folder).exit_code == 0


def test_bad_api_key_fails_clearly_and_prints_no_secret(fake, pg_url):
    wrong = "lc-0000wrongkey9999zz"
    res = cli(fake, "run", "--target", pg_url, key=wrong)
    assert res.exit_code == 1
    assert "401" in res.output and "LEADCONDUIT_API_KEY" in res.output
    assert len(fake.log) == 2  # one request per entity: a 401 is not retried
    texts = [res.output, json.dumps(history(pg_url), default=str)]
    for secret in (wrong, base64.b64encode(f"API:{wrong}".encode()).decode(), f"API:{wrong}"):
        assert all(secret not in t for t in texts)


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_5xx_storms_are_retried_and_nothing_is_lost(fake, pg_url, status):
    fake.inject(status, count=3)
    res = cli(fake, "run", "--target", pg_url, "--only", "events")
    assert res.exit_code == 0, res.output
    assert landed_events(pg_url) == [e.id for e in fake.events]
    assert [e.status for e in fake.log[:4]] == [status] * 3 + [200]
    run, = history(pg_url)
    assert run["status"] == "success"


def test_a_failed_run_resumes_after_its_last_committed_id(fake, pg_url):
    fake.seed(1000, T0 + dt.timedelta(days=1))  # 4,400 events: five pages

    def hook(entity: str, page: int) -> None:
        if page == 2:  # (the request index; the hook runs after that request's auth check)
            fake.api_key = "revoked"  # the key is revoked mid-run: page 3 answers 401
    fake.page_hook = hook
    failed = cli(fake, "run", "--target", pg_url, "--only", "events")
    assert failed.exit_code == 1 and "401" in failed.output
    assert len(landed_events(pg_url)) == 2000
    fake.page_hook, fake.api_key = None, API_KEY
    fake.reset_log()
    res = cli(fake, "run", "--target", pg_url, "--only", "events")
    assert res.exit_code == 0, res.output
    assert "resuming failed run" in res.output
    assert queries(fake)[0]["after_id"] == fake.events[1999].id
    assert landed_events(pg_url) == [e.id for e in fake.events]


def test_a_truncated_page_is_retried_and_lands_every_event(fake, pg_url):
    fake.faults.malformed_requests = {2}  # the second page arrives cut off mid-JSON, once
    res = cli(fake, "run", "--target", pg_url, "--only", "events")
    assert res.exit_code == 0, res.output
    assert fake.counters.malformed == 1
    assert landed_events(pg_url) == [e.id for e in fake.events]
    assert queries(fake)[1] == queries(fake)[2]  # the same page asked again
    run, = history(pg_url)
    assert run["performance_metrics"]["retries"] == 1


def test_lint_warns_that_start_date_stays_null_with_a_time_cursor(tmp_path):
    from syncrunner.spec.load import check_spec
    data = yaml.safe_load((SPECS / "events.yaml").read_text())
    data["source"]["cursor"] = "vars.submission.timestamp"
    spec = tmp_path / "events.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    _, problems = check_spec(spec, {"LEADCONDUIT_API_KEY": "x"}, strict_env=False)
    warning, = [str(p) for p in problems if "stay null" in p.message]
    assert "source.request: warning: end_date and start_date stay null with a datetime cursor" in warning
    _, problems = check_spec(SPECS / "events.yaml", {"LEADCONDUIT_API_KEY": "x"}, strict_env=False)
    assert problems == []
