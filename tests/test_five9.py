"""Five9 contacts (SOAP/XML) through the CLI into PostgreSQL, against the fake in tests/fakes/five9.py:
every contact once, exactly the changed ones on the next run, SOAP faults and refused credentials as
one clear line, hostile XML (external entities, entity expansion) refused with nothing read."""
from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from tests.fakes.five9 import SOAP_ENV, FakeFive9
from tests.helpers import cli, history, rows

SPECS = Path(__file__).resolve().parent.parent / "specs"
USER, PASSWORD = "api.admin@acme.example", "f9-pw-5e1a7c-secret"
LA = dt.timezone(dt.timedelta(hours=-8))


@pytest.fixture
def five9():
    with FakeFive9(USER, PASSWORD) as fake:
        yield fake


def env_for(fake: FakeFive9, pg_url: str, **extra: str) -> dict:
    env = dict(os.environ, FIVE9_BASE_URL=fake.base_url, FIVE9_USERNAME=USER, FIVE9_PASSWORD=PASSWORD,
               FIVE9_REQUESTS_PER_SECOND="100", SYNCRUNNER_TARGET_URL=pg_url)
    env.update(extra)
    return env


def run(fake: FakeFive9, pg_url: str, *args: str, **extra: str):
    return cli("run", SPECS / "five9", "--no-progress", *args, env=env_for(fake, pg_url, **extra), timeout=120)


def landed(pg_url: str) -> dict[int, tuple]:
    return {r[0]: tuple(r[1:]) for r in rows(pg_url, "SELECT contact_id, number1, first_name, last_name, email, "
                                                     "city, modified_at FROM five9_contacts")}


def upstream(fake: FakeFive9) -> dict[int, tuple]:
    def utc(text: str) -> dt.datetime:
        local = dt.datetime.fromisoformat(text).replace(tzinfo=fake.zone)
        return local.astimezone(dt.timezone.utc)
    return {cid: (c["number1"], c["first_name"], c["last_name"], c["email"], c["city"], utc(c["modified_at"]))
            for cid, c in fake.contacts.items()}


def last_metrics(pg_url: str) -> dict:
    m = history(pg_url)[-1].performance_metrics
    return json.loads(m) if isinstance(m, str) else m


def test_folder_run_lands_every_contact_once_then_only_the_changed_ones(five9, pg_url):
    ids = five9.seed(400)
    first = run(five9, pg_url)
    assert first.returncode == 0, first.stdout + first.stderr
    got = landed(pg_url)
    assert {k: (v[0], v[1], v[2], v[3], v[4], v[5].astimezone(dt.timezone.utc)) for k, v in got.items()} \
        == upstream(five9)
    h = history(pg_url)[-1]
    assert (h.status, h.records_processed, h.records_created) == ("success", 400, 400)
    # the local DATE_TIME text was read in the domain's zone: 12:00:01 UTC is 04:00:01 in Los Angeles
    assert five9.contacts[ids[0]]["modified_at"] == "2024-01-01 04:00:01.000"
    assert got[ids[0]][5] == dt.datetime(2024, 1, 1, 12, 0, 1, tzinfo=dt.timezone.utc)

    before = upstream(five9)
    five9._clock += dt.timedelta(days=2)  # edits two days later, then one new contact
    for cid in ids[10:15]:
        five9.update(cid, city="Austin")
    new = five9.seed(1)
    second = run(five9, pg_url)
    assert second.returncode == 0, second.stdout + second.stderr
    h = history(pg_url)[-1]
    assert (h.records_created, h.records_updated, h.records_failed) == (1, 5, 0)
    # the window is applied on this side: the contacts modified before the last watermark minus the
    # 5-minute lookback are dropped unread; those within it are read again and found unchanged
    since = max(v[5] for k, v in before.items()) - dt.timedelta(minutes=5)
    again = sum(1 for cid, v in before.items() if v[5] >= since and cid not in ids[10:15])
    assert 0 < again < 400 and h.records_processed == 6 + again
    assert last_metrics(pg_url)["outside_window"] == 401 - 6 - again
    assert landed(pg_url)[ids[12]][4] == "Austin" and new[0] in landed(pg_url)
    # the API has no range criteria: every run lists every contact the criteria match, in one call
    assert len(five9.request_bodies) == 2


def test_values_are_xml_escaped_in_the_request_body(five9, pg_url, tmp_path):
    """A value printed by the XML body template cannot add markup: & < > ' " are escaped."""
    ids = five9.seed(3)
    five9.contacts[ids[1]]["last_name"] = "O'Brien & <Sons>"
    text = (SPECS / "five9" / "contacts.yaml").read_text().replace(
        "<field>${FIVE9_LOOKUP_FIELD:-number1}</field><value>${FIVE9_LOOKUP_VALUE:-%}</value>",
        "<field>last_name</field><value>{{ \"O'Brien & <Sons>\" }}</value>")
    (tmp_path / "contacts.yaml").write_text(text)
    res = cli("run", tmp_path / "contacts.yaml", "--no-progress", env=env_for(five9, pg_url), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    body = five9.request_bodies[-1].decode()
    assert "<value>O&#39;Brien &amp; &lt;Sons&gt;</value>" in body
    assert list(landed(pg_url)) == [ids[1]]


def test_a_soap_fault_fails_at_once_with_its_faultstring(five9, pg_url):
    five9.seed(5)
    res = run(five9, pg_url, FIVE9_LOOKUP_FIELD="no_such_field")
    assert res.returncode == 1
    line = "SOAP fault env:Server: Contact field 'no_such_field' doesn't exist (not retried)"
    assert line in res.stderr
    assert len(five9.request_bodies) == 1  # a fault is an answer: not retried
    h = history(pg_url)[-1]
    assert h.status == "failed" and line in h.error_message and "\n" not in h.error_message


def test_refused_credentials_fail_at_once_naming_the_variables_not_the_password(five9, pg_url):
    five9.seed(5)
    res = run(five9, pg_url, FIVE9_PASSWORD="wrong-password-9f8e")
    assert res.returncode == 1
    assert "HTTP 401" in res.stderr and "${FIVE9_USERNAME}" in res.stderr and "not retried" in res.stderr
    assert "wrong-password-9f8e" not in res.stderr + res.stdout
    assert five9.count(401) == 1


def test_rate_limited_calls_are_retried(five9, pg_url):
    five9.seed(20)
    five9.inject(429, count=2)
    res = run(five9, pg_url)
    assert res.returncode == 0, res.stdout + res.stderr
    assert five9.count(429) == 2 and len(landed(pg_url)) == 20


def test_malformed_contacts_are_dead_lettered_and_the_run_is_partial(five9, pg_url):
    ids = five9.seed(10)
    five9.contacts[ids[3]]["email"] = "not-an-email"
    five9.contacts[ids[7]]["modified_at"] = "31/12/2023 10:00"
    res = run(five9, pg_url)
    assert res.returncode == 3, res.stdout + res.stderr
    assert sorted(landed(pg_url)) == sorted(set(ids) - {ids[3], ids[7]})
    bad = rows(pg_url, "SELECT record_key FROM sync_dead_letters ORDER BY record_key")
    assert sorted(str(r[0]) for r in bad) == sorted([str(ids[3]), str(ids[7])])


def test_an_answer_at_the_1000_cap_fails_instead_of_missing_contacts(five9, pg_url):
    five9.seed(1001)
    res = run(five9, pg_url)
    assert res.returncode == 1
    assert "returned 1000 records, the API's cap (max_results_per_query=1000)" in res.stderr


SECRET = "TOP-SECRET-LINE-4f1d"


@pytest.mark.parametrize("kind", ["file", "fifo", "parameter", "laughs"])
def test_hostile_xml_is_refused_and_nothing_is_read_from_disk(five9, pg_url, tmp_path, kind):
    """An answer whose DTD declares an external entity (a regular file, or a FIFO that would block
    any reader forever), an external parameter entity, or nested entities ("billion laughs")."""
    five9.seed(3)
    target = tmp_path / "secret.txt"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.write_text(SECRET)
    uri = target.as_uri()
    dtd = {"file": f'<!ENTITY x SYSTEM "{uri}">', "fifo": f'<!ENTITY x SYSTEM "{uri}">',
           "parameter": f'<!ENTITY % p SYSTEM "{uri}"> %p;',
           "laughs": '<!ENTITY a "aaaaaaaaaa">' + "".join(
               f'<!ENTITY {chr(98 + i)} "' + f"&{chr(97 + i)};" * 10 + '">' for i in range(8))}[kind]
    use = "&x;" if kind in ("file", "fifo") else "&i;" if kind == "laughs" else ""
    five9.hostile = (f'<?xml version="1.0"?><!DOCTYPE env:Envelope [{dtd}]>'
                     f'<env:Envelope xmlns:env="{SOAP_ENV}"><env:Body><ns2:getContactRecordsResponse '
                     f'xmlns:ns2="http://service.admin.ws.five9.com/"><return><fields>contact_id</fields>'
                     f'<records><values><data>{use}</data></values></records></return>'
                     f'</ns2:getContactRecordsResponse></env:Body></env:Envelope>').encode()
    res = run(five9, pg_url)  # a parser opening the FIFO would block here until the timeout
    assert res.returncode == 1, res.stdout + res.stderr
    assert "the XML has a document type declaration <!DOCTYPE env:Envelope>: refused" in res.stderr
    assert "nothing was read" in res.stderr
    out = res.stdout + res.stderr + str([tuple(r) for r in history(pg_url)])
    assert SECRET not in out and "aaaaaaaaaa" not in out
    assert "five9_contacts" not in str(rows(pg_url, "SELECT tablename FROM pg_tables"))


def test_an_answer_cut_off_mid_xml_is_retried(five9, pg_url):
    five9.seed(50)
    five9.faults.malformed_requests = {1}  # the first answer is sent cut in half
    res = run(five9, pg_url)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(landed(pg_url)) == 50 and len(five9.request_bodies) == 2
    assert last_metrics(pg_url)["retry_causes"] == {"response not valid XML": 1}
