"""Issue 24, "a truncated JSON page" for the two systems whose own tests do not cut a page off
(Arrivy and GoHighLevel; SalesRabbit, LeadConduit and HubSpot have theirs): a 200 whose body
stops mid-JSON is retried like a 5xx, the run ends `success` with every record of the fake once,
and the retry is counted. CLI into PostgreSQL against the fakes."""
from __future__ import annotations

import json

from tests.fakes import FakeArrivy, FakeGoHighLevel
from tests.helpers import history, rows
from tests.test_arrivy import KEY, SPECS as ARRIVY_SPECS, T0 as ARRIVY_T0, TOKEN as ARRIVY_TOKEN, run_cli, upstream
from tests.test_gohighlevel import T0 as GHL_T0, TOKEN, landed, run, upstream as ghl_upstream


def metrics(row) -> dict:
    m = row.performance_metrics
    return json.loads(m) if isinstance(m, str) else m


def test_arrivy_a_task_page_cut_off_mid_json_is_retried_and_every_task_lands(pg_url):
    with FakeArrivy(auth_key=KEY, auth_token=ARRIVY_TOKEN) as fake:
        fake.seed(ARRIVY_T0, tasks=1203, bookings=0, crew=1, groups=1, unscheduled_every=10)
        fake.faults.malformed_requests = {2}  # the second request is answered 200 with half its body
        res = run_cli(fake, pg_url, path=ARRIVY_SPECS / "tasks.yaml")
        assert res.exit_code == 0, res.output
        assert fake.counters.malformed == 1
        got = {r[0]: (r[1], r[2], r[3]) for r in rows(pg_url, "SELECT id, title, status, unscheduled "
                                                              "FROM arrivy_tasks")}
        assert got == upstream(fake)["tasks"] and len(got) == 1203
        (run_row,) = history(pg_url)
        assert run_row.status == "success" and run_row.records_created == 1203
        assert metrics(run_row)["retry_causes"] == {"response not valid JSON": 1}


def test_gohighlevel_a_page_cut_off_mid_json_is_retried_and_every_opportunity_lands(pg_url):
    with FakeGoHighLevel(TOKEN, burst_max=1000, burst_window_s=1.0) as fake:
        fake.seed_opportunities(350, GHL_T0, same_time_every=4)
        fake.faults.malformed_requests = {3}
        res = run(fake, pg_url, "--only", "opportunities")
        assert res.exit_code == 0, res.output
        assert fake.counters.malformed == 1
        assert landed(pg_url, "ghl_opportunities", "updated_at") == ghl_upstream(fake, "opportunities")
        (run_row,) = history(pg_url)
        assert run_row.status == "success" and run_row.records_created == 350
        assert metrics(run_row)["retry_causes"] == {"response not valid JSON": 1}
