"""Issue 24, "a few malformed or partial records", for the two REST systems whose tests had none
(Arrivy, SalesRabbit): a record whose value cannot be read as its field's type is counted,
dead-lettered with the reason, and makes the run `partial` (exit 3); every other record lands.
CLI into PostgreSQL against the fakes."""
from __future__ import annotations

from tests.fakes import FakeArrivy, FakeSalesRabbit
from tests.helpers import history, rows
from tests.test_arrivy import KEY, SPECS as ARRIVY_SPECS, T0 as ARRIVY_T0, TOKEN as ARRIVY_TOKEN, run_cli
from tests.test_salesrabbit import T0 as RABBIT_T0, TOKEN as RABBIT_TOKEN
from tests.test_salesrabbit import cli as rabbit_cli


def dead_letters(target: str) -> dict[str, str]:
    """record key -> the field named in its dead letter (each with a reason, and action rejected)."""
    got = rows(target, "SELECT record_key, field, reason, action FROM sync_dead_letters")
    assert all(reason and action == "rejected" for _, _, reason, action in got)
    return {str(k): field for k, field, _, _ in got}


def test_arrivy_tasks_with_unreadable_values_are_dead_lettered_and_the_run_is_partial(pg_url):
    with FakeArrivy(auth_key=KEY, auth_token=ARRIVY_TOKEN) as fake:
        fake.seed(ARRIVY_T0, tasks=600, bookings=0, crew=2, groups=1, unscheduled_every=10)
        bad = sorted(fake.store["tasks"])[10:12]
        fake.store["tasks"][bad[0]]["customer_id"] = "n/a"       # an integer field
        fake.store["tasks"][bad[1]]["group_id"] = {"id": 3}      # an object where a number belongs
        res = run_cli(fake, pg_url, path=ARRIVY_SPECS / "tasks.yaml")
        assert res.exit_code == 3, res.output
        (run,) = history(pg_url)
        assert (run.status, run.records_failed, run.records_created) == ("partial", 2, 598)
        assert dead_letters(pg_url) == {str(bad[0]): "customer_id", str(bad[1]): "group_id"}
        landed = {r[0] for r in rows(pg_url, "SELECT id FROM arrivy_tasks")}
        assert landed == set(fake.store["tasks"]) - set(bad)


def test_salesrabbit_leads_with_unreadable_values_are_dead_lettered_and_the_run_is_partial(pg_url):
    with FakeSalesRabbit(token=RABBIT_TOKEN) as fake:
        fake.faults.retry_after_seconds = 0
        fake.seed(users=3, leads=300, start=RABBIT_T0)
        bad = sorted(fake.leads)[5:7]
        fake.leads[bad[0]]["userId"] = "unassigned"              # an integer field
        fake.leads[bad[1]]["firstName"] = "x" * 300              # longer than the column
        res = rabbit_cli(fake, pg_url, "--only", "leads")
        assert res.exit_code == 3, res.output
        (run,) = history(pg_url)
        assert (run.status, run.records_failed, run.records_created) == ("partial", 2, 298)
        assert dead_letters(pg_url) == {str(bad[0]): "user_id", str(bad[1]): "first_name"}
        landed = {r[0] for r in rows(pg_url, "SELECT id FROM salesrabbit_leads")}
        assert landed == set(fake.leads) - set(bad)
