"""Google Sheets end to end: `syncrunner run specs/google_sheets/` against the Sheets fake
(tests/fakes/gsheets.py) into PostgreSQL, with the specs' own service-account auth (google-auth signs
a JWT that the fake token endpoint verifies) or a plain bearer token."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest

from tests.fakes.gsheets import Cell, FakeSheets
from tests.helpers import cli, history, rows

pytest.importorskip("google.oauth2.service_account")  # the `google` extra (scripts/setup installs it)

SPECS = Path(__file__).resolve().parent.parent / "specs" / "google_sheets"
LEADS_ID, SPEND_ID = "1LeadsSheetAbc", "1SpendSheetXyz"
CLIENT_EMAIL = "syncrunner@example-project.iam.gserviceaccount.com"

LEAD_HEADER = ["Lead ID", "Created At", "First Name", "Last Name", "Phone", "Email", "UTM Campaign",
               "Channel", "Division", "Lead Set", "Appt Date", "Total Job Value"]
SPEND_HEADER = ["Date", "Division", "Channel", "Campaign", "Cost", "Event Start Date", "Event End Date"]
CAMPAIGN_HEADER = ["Campaign ID", "Campaign", "Channel", "Division", "Monthly Budget", "Share of Budget", "Active"]


def lead_row(i: int) -> list:
    row = [f"L{i:04d}", dt.datetime(2025, 1, 1 + i % 28, 9, i % 60, 0), f"First{i}", f"Last{i}",
           f"720555{i:04d}", f"lead{i}@example.com", f"spring-{i % 3}", ["GMB", "Google Ads", "Direct Mail"][i % 3],
           "Denver", i % 2 == 0, dt.date(2025, 2, 1 + i % 28), Cell(Decimal(1000 + i * 10) + Decimal("0.5"), "currency")]
    if i % 5 == 0:
        row = row[:9]  # ragged: no lead set, appointment or job value yet (trailing cells left out)
    elif i % 7 == 0:
        row[5] = ""  # an empty cell in the middle
    return row


def seed(fake: FakeSheets, leads: int = 60, spend: int = 40) -> None:
    fake.sheet(LEADS_ID, "Leads", [LEAD_HEADER] + [lead_row(i) for i in range(1, leads + 1)])
    spend_rows = [[dt.date(2025, 1, 1) + dt.timedelta(days=i // 4), "Denver", ["GMB", "Bing Ads"][i % 2],
                   f"camp-{i % 4}", Cell(Decimal("1234.5") + i, "currency")] for i in range(spend)]
    spend_rows[3] += [dt.date(2025, 3, 1), dt.date(2025, 3, 3)]  # an event row: two more cells
    fake.sheet(SPEND_ID, "Spend", [SPEND_HEADER] + spend_rows)
    fake.sheet(SPEND_ID, "Campaigns", [CAMPAIGN_HEADER] + [
        [f"C{i}", f"camp-{i}", "GMB", "Denver", Cell(Decimal(5000 * (i + 1)), "currency"),
         Cell(Decimal("0.12") * (i + 1), "percent"), i != 3] for i in range(4)])


@pytest.fixture
def sheets():
    with FakeSheets() as fake:
        yield fake


@pytest.fixture
def key_file(sheets, tmp_path):
    """A real RSA service-account key whose token_uri is the fake's token endpoint."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    sheets.add_service_account(CLIENT_EMAIL, key.public_key())
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "example-project", "private_key_id": "0123456789abcdef0123",
        "private_key": pem, "client_email": CLIENT_EMAIL, "client_id": "1234567890",
        "token_uri": f"{sheets.base_url}/token"}))
    return path, pem


def env_for(sheets: FakeSheets, key_path: Path, **extra: str) -> dict:
    import os
    env = dict(os.environ, GOOGLE_SHEETS_BASE_URL=sheets.base_url, GOOGLE_APPLICATION_CREDENTIALS=str(key_path),
               GSHEET_LEADS_SPREADSHEET_ID=LEADS_ID, GSHEET_SPEND_SPREADSHEET_ID=SPEND_ID)
    env.update(extra)
    return env


def run_folder(target: str, env: dict, path: Path = SPECS):
    return cli("run", path, "--target", target, "--no-progress", env=env)


def test_folder_run_lands_every_row_once_then_only_the_changed_ones(sheets, key_file, pg_url):
    seed(sheets)
    env = env_for(sheets, key_file[0])
    first = run_folder(pg_url, env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert sheets.token_requests == 3  # one JWT exchange per entity's run (a token lives an hour)
    assert sheets.count(200, "/values/") == 3
    assert rows(pg_url, "SELECT COUNT(*), COUNT(DISTINCT lead_id) FROM gsheet_marketing_leads")[0] == (60, 60)
    assert rows(pg_url, "SELECT COUNT(*) FROM gsheet_marketing_spend")[0][0] == 40
    assert rows(pg_url, "SELECT COUNT(*) FROM gsheet_campaigns")[0][0] == 4

    # formatted text coerced by field type: "$1,060.50", "1/6/2025 9:05:00", "TRUE", "12%"
    lead = rows(pg_url, "SELECT created_at, lead_set, appt_date, total_job_value, email "
                        "FROM gsheet_marketing_leads WHERE lead_id = 'L0006'")[0]
    assert lead == (dt.datetime(2025, 1, 7, 14, 6, tzinfo=dt.timezone.utc), True, dt.date(2025, 2, 7),
                    Decimal("1060.50"), "lead6@example.com")
    ragged = rows(pg_url, "SELECT lead_set, appt_date, total_job_value, division FROM gsheet_marketing_leads "
                          "WHERE lead_id = 'L0005'")[0]
    assert ragged == (None, None, None, "Denver")  # the left-out trailing cells are NULL, not an error
    assert rows(pg_url, "SELECT email FROM gsheet_marketing_leads WHERE lead_id = 'L0007'")[0][0] is None
    assert rows(pg_url, "SELECT spend_date, cost, event_start_date, event_end_date FROM gsheet_marketing_spend "
                        "WHERE sheet_row = 5")[0] == (dt.date(2025, 1, 1), Decimal("1237.50"),
                                                      dt.date(2025, 3, 1), dt.date(2025, 3, 3))
    assert rows(pg_url, "SELECT monthly_budget, budget_share, active FROM gsheet_campaigns "
                        "WHERE campaign_id = 'C1'")[0] == (Decimal("10000.00"), Decimal("0.2400"), True)
    assert {h.status for h in history(pg_url)} == {"success"}

    # upstream: one lead edited, two removed; one spend cost edited
    leads = sheets.books[LEADS_ID]["Leads"]
    leads[10][7] = "Bing Ads"  # L0010's channel
    del leads[20:22]           # L0020, L0021
    sheets.books[SPEND_ID]["Spend"][2][4] = Cell(Decimal("99.99"), "currency")
    second = run_folder(pg_url, env)
    assert second.returncode == 0, second.stdout + second.stderr
    runs = {(h.sync_type, h.records_created, h.records_updated) for h in history(pg_url)[3:]}
    assert runs == {("marketing_leads", 0, 1), ("marketing_spend", 0, 1), ("campaigns", 0, 0)}
    leads_run = [h for h in history(pg_url)[3:] if h.sync_type == "marketing_leads"][0]
    assert leads_run.performance_metrics["records_unchanged"] == 57
    assert rows(pg_url, "SELECT lead_id FROM gsheet_marketing_leads WHERE deleted_at IS NOT NULL "
                        "ORDER BY lead_id") == [("L0020",), ("L0021",)]
    assert rows(pg_url, "SELECT marketing_channel FROM gsheet_marketing_leads WHERE lead_id = 'L0010'")[0][0] \
        == "Bing Ads"
    assert rows(pg_url, "SELECT cost FROM gsheet_marketing_spend WHERE sheet_row = 3")[0][0] == Decimal("99.99")

    # a spend row deleted in the middle: the rows below move up one row number (keyed by row number:
    # each is updated to what its number now holds) and the last number is marked deleted
    del sheets.books[SPEND_ID]["Spend"][38]  # sheet row 39 of 41
    third = run_folder(pg_url, env, SPECS / "marketing_spend.yaml")
    assert third.returncode == 0, third.stdout + third.stderr
    last = history(pg_url)[-1]
    assert (last.records_created, last.records_updated) == (0, 2)  # rows 39 and 40 took new contents
    assert rows(pg_url, "SELECT sheet_row FROM gsheet_marketing_spend WHERE deleted_at IS NOT NULL") == [(41,)]


def test_a_renamed_header_fails_naming_the_column_the_spec_and_the_field(sheets, key_file, pg_url):
    seed(sheets)
    sheets.books[SPEND_ID]["Spend"][0][4] = "Spend"  # "Cost" renamed in the sheet
    res = run_folder(pg_url, env_for(sheets, key_file[0]), SPECS / "marketing_spend.yaml")
    assert res.returncode == 1
    err = res.stderr
    assert "marketing_spend.yaml: fields.cost.from: column 'cost' is not in the header row" in err, err
    assert "'Spend'" in err and "renamed" in err
    assert rows(pg_url, "SELECT status FROM sync_history")[0][0] == "failed"
    assert rows(pg_url, "SELECT to_regclass('gsheet_marketing_spend') IS NULL")[0][0]  # nothing created


def test_a_bad_token_is_a_clear_error_and_no_secret_is_printed(sheets, key_file, pg_url, tmp_path):
    """A plain bearer token (simple setups) refused by the API; then a key the token endpoint refuses."""
    seed(sheets)
    spec = (SPECS / "campaigns.yaml").read_text()
    start = spec.index("  auth:\n")
    end = spec.index("  request:\n")
    bearer = tmp_path / "campaigns.yaml"
    bearer.write_text(spec[:start] + "  auth: {type: bearer, token: \"${GSHEET_ACCESS_TOKEN}\"}\n" + spec[end:])
    token = "ya29.a0AfH6SMBrevokedTokenValue"
    res = run_folder(pg_url, env_for(sheets, key_file[0], GSHEET_ACCESS_TOKEN=token), bearer)
    out = res.stdout + res.stderr
    assert res.returncode == 1
    assert "HTTP 401" in out and "bearer token (from ${GSHEET_ACCESS_TOKEN})" in out and "UNAUTHENTICATED" in out
    assert token not in out and token[5:] not in out

    # the right token works
    good = run_folder(pg_url, env_for(sheets, key_file[0], GSHEET_ACCESS_TOKEN="ya29.test-token"), bearer)
    assert good.returncode == 0, good.stdout + good.stderr

    # a service-account key the token endpoint does not know: refused, the key never printed
    path, pem = key_file
    sheets.service_accounts.clear()
    res = run_folder(pg_url, env_for(sheets, path), SPECS / "campaigns.yaml")
    out = res.stdout + res.stderr
    assert res.returncode == 1
    assert "token endpoint refused the service-account key file" in out and "invalid_grant" in out, out
    body = [line for line in pem.splitlines() if "PRIVATE KEY" not in line]
    assert not any(line in out for line in body) and "0123456789abcdef0123" not in out

    # a key file that is not there: the run fails (recorded), naming the variable to check
    res = run_folder(pg_url, env_for(sheets, tmp_path / "missing.json"), SPECS / "campaigns.yaml")
    assert res.returncode == 1
    assert "cannot read the service-account key file (from ${GOOGLE_APPLICATION_CREDENTIALS})" in res.stderr
    assert rows(pg_url, "SELECT status FROM sync_history ORDER BY id DESC LIMIT 1")[0][0] == "failed"


def test_quota_429_is_retried_and_an_empty_sheet_is_a_clear_error(sheets, key_file, pg_url):
    seed(sheets)
    sheets.inject(429, count=2, path_contains="/values/")
    env = env_for(sheets, key_file[0])
    res = run_folder(pg_url, env, SPECS / "campaigns.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert sheets.count(429) == 2 and rows(pg_url, "SELECT COUNT(*) FROM gsheet_campaigns")[0][0] == 4
    sheets.sheet(SPEND_ID, "Campaigns", [])  # cleared: Sheets leaves `values` out
    res = run_folder(pg_url, env, SPECS / "campaigns.yaml")
    assert res.returncode == 1 and "no header row" in res.stderr
    assert rows(pg_url, "SELECT COUNT(*) FROM gsheet_campaigns WHERE deleted_at IS NULL")[0][0] == 4
