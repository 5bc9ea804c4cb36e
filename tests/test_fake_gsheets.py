"""The Google Sheets fake answers as the documented API does (tests/fakes/gsheets.py cites the pages):
render options, trimmed ragged output, A1 ranges, Google's error envelope, the read quota."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import requests

from tests.fakes.gsheets import Cell, FakeSheets

AUTH = {"Authorization": "Bearer ya29.test-token"}


@pytest.fixture
def fake():
    with FakeSheets(reads_per_minute=5) as f:
        f.sheet("book", "Spend", [["Date", "Cost", "Share", "Note", ""],
                                  [dt.date(2025, 1, 15), Cell(Decimal("1234.5"), "currency"), Cell(Decimal("0.12"), "percent"), "", ""],
                                  [],
                                  [dt.datetime(2025, 1, 16, 9, 30), Cell(-5, "currency"), True, "x"],
                                  ["", "", ""]])
        f.sheet("book", "Lead List", [["a"], ["b"]])
        yield f


def get(fake, rng, **params):
    return requests.get(f"{fake.base_url}/v4/spreadsheets/book/values/{rng}", params=params, headers=AUTH, timeout=5)


def test_formatted_values_trimmed_rows_and_range(fake):
    body = get(fake, "Spend!A1:E").json()
    assert body["majorDimension"] == "ROWS" and body["range"] == "Spend!A1:E5"
    assert body["values"] == [["Date", "Cost", "Share", "Note"], ["1/15/2025", "$1,234.50", "12%"], [],
                              ["1/16/2025 9:30:00", "-$5.00", "TRUE", "x"]]


def test_unformatted_values_serial_dates_and_formatted_strings(fake):
    raw = get(fake, "Spend!A2:C2", valueRenderOption="UNFORMATTED_VALUE").json()["values"]
    assert raw == [[45672.0, 1234.5, 0.12]]  # 2025-01-15 is day 45672 after 1899-12-30
    text = get(fake, "Spend!A4:C4", valueRenderOption="UNFORMATTED_VALUE",
               dateTimeRenderOption="FORMATTED_STRING").json()["values"]
    assert text == [["1/16/2025 9:30:00", -5, True]]
    cols = get(fake, "Spend!A1:B2", majorDimension="COLUMNS").json()["values"]
    assert cols == [["Date", "1/15/2025"], ["Cost", "$1,234.50"]]


def test_quoted_sheet_names_empty_ranges_and_errors(fake):
    assert get(fake, "'Lead List'!A1:A").json()["values"] == [["a"], ["b"]]
    empty = get(fake, "Spend!H1:H").json()
    assert "values" not in empty  # nothing in the range: the key is left out
    bad = get(fake, "Nope!A1:B")
    assert bad.status_code == 400 and bad.json()["error"] == {
        "code": 400, "message": "Unable to parse range: Nope!A1:B", "status": "INVALID_ARGUMENT"}
    missing = requests.get(f"{fake.base_url}/v4/spreadsheets/other/values/A1", headers=AUTH, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
    refused = requests.get(f"{fake.base_url}/v4/spreadsheets/book/values/Spend", timeout=5)
    assert refused.status_code == 401 and refused.json()["error"]["status"] == "UNAUTHENTICATED"


def test_read_quota_answers_429_resource_exhausted_without_retry_after(fake):
    statuses = [get(fake, "Spend").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    over = get(fake, "Spend")
    assert over.json()["error"]["status"] == "RESOURCE_EXHAUSTED" and "Retry-After" not in over.headers
