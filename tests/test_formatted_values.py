"""Numbers and dates as formatted text (field options number_format and date_format) and tabular
responses (source.rows): the pure parts, without a server."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from syncrunner.core.coerce import coercer, parse_formatted
from syncrunner.sources.http.rows import RowsError, RowTable, snake_case
from syncrunner.spec.model import FieldSpec, SourceSpec, Spec, TargetSpec, DeleteSpec


@pytest.mark.parametrize("text, mark, value", [
    ("$1,234.50", ".", "1234.50"), ("1,234", ".", "1234"), ("12%", ".", "0.12"), ("(1,234.50)", ".", "-1234.50"),
    ("-$1,234.50", ".", "-1234.50"), ("$ 12", ".", "12"), ("€1,234,567.5", ".", "1234567.5"), (".5", ".", "0.5"),
    ("1.234,50 €", ",", "1234.50"), ("1\u00a0234,5", ",", "1234.5"), ("12,5 %", ",", "0.125"), ("1'234.5", ".", "1234.5"),
])
def test_formatted_numbers_read_as_the_cell_value(text, mark, value):
    assert parse_formatted(text, mark) == Decimal(value)


@pytest.mark.parametrize("text", ["12,34", "1,2345", "1.2.3", "--5", "5-", "$1,234.50x", "", "$", "%", "()", "abc"])
def test_text_that_is_not_a_number_is_refused(text):
    with pytest.raises(ValueError, match="is not a number"):
        parse_formatted(text)


def test_field_types_use_the_formats():
    assert coercer("integer", number_format=".")("$1,234") == 1234
    with pytest.raises(ValueError):
        coercer("integer", number_format=".")("12%")  # 0.12 is not whole
    assert coercer("decimal", scale=2, number_format=",")("-1.234,567 €") == Decimal("-1234.57")
    with pytest.raises(ValueError):
        coercer("decimal")("$1,234.50")  # without number_format: plain numbers only
    assert coercer("date", date_format="%m/%d/%Y")("1/5/2025") == dt.date(2025, 1, 5)
    assert coercer("date", date_format="%m/%d/%Y")(dt.date(2025, 1, 6)) == dt.date(2025, 1, 6)
    with pytest.raises(ValueError, match="does not match the date format"):
        coercer("date", date_format="%m/%d/%Y")("2025-01-05")
    naive = coercer("datetime", tz="America/New_York", date_format="%m/%d/%Y %H:%M:%S")("7/4/2025 9:30:00")
    assert naive == dt.datetime(2025, 7, 4, 13, 30, tzinfo=dt.timezone.utc)


def spec(fields: dict[str, str | None], key: str = "id") -> Spec:
    fs = {n: FieldSpec(n, "string", source_path=p) for n, p in fields.items()}
    return Spec(path="specs/x/sheet.yaml", crm="x", entity="sheet", enabled=True, after=[], lookback=dt.timedelta(0),
                source=SourceSpec("http", [key], None, "UTC", 1000, "include", {}), target=TargetSpec("t", ["id"], 500),
                fields=fs, rules=[], deletes=DeleteSpec(), digest="d")


def test_rows_become_records_ragged_and_empty_cells_absent():
    table = RowTable("first_row", "snake_case", "row", 1)
    s = spec({"id": "id", "cost": "cost", "note": "note"})
    out = table.records([["ID", "Cost ($)", "Note"], ["1", "$5"], [], ["2", "", "x", "stray"], ["", ""]], s, "page 1")
    assert out == [{"id": "1", "cost": "$5", "note": None, "row": 2}, {"id": "2", "cost": None, "note": "x", "row": 4}]
    assert table.counts == {"empty_rows": 2, "cells_without_header": 1}
    assert snake_case(" Event Start-Date ") == "event_start_date"


def test_a_missing_or_duplicated_column_is_an_error_naming_it():
    s = spec({"id": "id", "cost": '"Cost"'})
    with pytest.raises(RowsError, match=r"specs/x/sheet.yaml: fields.cost.from: column 'Cost' is not in the header "
                                        r"row of page 1 \(did you mean 'Costs'\?\)"):
        RowTable("first_row").records([["id", "Costs"], ["1", "2"]], s, "page 1")
    with pytest.raises(RowsError, match="column 'id' appears more than once"):
        RowTable("first_row").records([["id", "Cost", "id"]], s, "page 1")
    with pytest.raises(RowsError, match="no header row"):
        RowTable("first_row").records(None, s, "page 1")
    fixed = RowTable(["id", "Cost"]).records([["1", "3"]], s, "page 1")
    assert fixed == [{"id": "1", "Cost": "3"}]


def test_json_text_and_jmespath_in_expressions():
    from syncrunner.core.templating import compile_expression
    pick = compile_expression("""form | from_json | jmespath("[?title=='Result'].value | [0]")""")
    assert pick(form='[{"title": "Notes", "value": "x"}, {"title": "Result", "value": "Sold"}]') == "Sold"
    assert pick(form=[{"title": "Result", "value": "No Demo"}]) == "No Demo"
    assert pick(form=None) is None and pick(form="") is None
    with pytest.raises(ValueError):
        pick(form="{not json")
