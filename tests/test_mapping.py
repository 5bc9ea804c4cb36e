"""Types, validators, expressions and ${ENV} interpolation, without a database."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from syncrunner.core.coerce import DataError
from syncrunner.core.mapping import Mapper
from syncrunner.core.redact import redact
from syncrunner.spec.load import load_spec

SPEC = """\
crm: t
entity: e
enabled: ${FLAG:-true}
source:
  kind: sql
  url: sqlite:///x.db
  query: SELECT 1
  cursor: updated_at
  key: id
  timezone: America/New_York
  chunk_size: ${CHUNK:-250}
target: {table: e, key: [id]}
fields:
  id: {type: integer, required: true}
  email: {type: string, validators: [email]}
  phone: {type: string, validators: [phone], on_invalid: "null"}
  site: {type: string, validators: [url]}
  price: {type: decimal, precision: 8, scale: 2, min: 0}
  active: {type: boolean}
  born: {type: date}
  starts_at: {expr: "combine(day, at)", type: datetime}
  stage: {type: string, choices: [lead, customer]}
  code: {type: string, regex: "[A-Z]{3}", max_length: 3}
  meta: {type: json}
  name: {from: props.name, type: string}
  first_tag: {from: "tags[0]", type: string}
  updated_at: {type: datetime, required: true}
validate:
  - {rule: "price is none or price < 1000", message: "price too high"}
"""


@pytest.fixture
def mapper(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(SPEC)
    return Mapper(load_spec(p, {}))


def good(**over):
    rec = dict(id="7", email="a@b.co", phone="(555) 123-4567", site="https://x.io", price="12.345",
               active="yes", born="1990-05-01", day=dt.date(2025, 7, 1), at=dt.timedelta(hours=9, minutes=30),
               stage="lead", code="ABC", meta='{"a": 1}', props={"name": "Zoë"}, tags=["vip", "x"],
               updated_at=dt.datetime(2025, 1, 15, 8, 0))
    rec.update(over)
    return rec


def test_good_record_is_typed(mapper):
    row = mapper.map(good())
    assert row["id"] == 7 and row["price"] == Decimal("12.34") and row["active"] is True
    assert row["born"] == dt.date(1990, 5, 1) and row["meta"] == {"a": 1}
    assert row["name"] == "Zoë" and row["first_tag"] == "vip"
    # naive source times are New York local; stored as UTC (EDT in July, EST in January)
    assert row["starts_at"] == dt.datetime(2025, 7, 1, 13, 30, tzinfo=dt.timezone.utc)
    assert row["updated_at"] == dt.datetime(2025, 1, 15, 13, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("field,value,reason", [
    ("email", "bob@", "invalid email"),
    ("site", "ftp:/x", "invalid URL"),
    ("price", "-1", "below the minimum"),
    ("price", "abc", "not a number"),
    ("price", "123456789", "does not fit"),
    ("active", "2", "not a boolean"),
    ("born", "0000-00-00", "zero date"),
    ("updated_at", "0000-00-00 00:00:00", "zero date"),
    ("updated_at", None, "required"),
    ("id", "7.5", "not a whole number"),
    ("stage", "other", "not one of"),
    ("code", "abcd", "does not match"),
    ("meta", "{oops", "not valid JSON"),
])
def test_bad_values_raise_data_error_naming_the_field(mapper, field, value, reason):
    with pytest.raises(DataError) as e:
        mapper.map(good(**{field: value}))
    assert e.value.field == field and reason in e.value.reason


def test_record_rule_and_on_invalid_null(mapper):
    with pytest.raises(DataError, match="price too high"):
        mapper.map(good(price="5000"))
    row = mapper.map(good(phone="call me"))
    assert row["phone"] is None and mapper.warnings[-1].field == "phone"


def test_empty_strings_are_missing_for_typed_fields(mapper):
    row = mapper.map(good(price="", born="  ", active=None))
    assert row["price"] is None and row["born"] is None and row["active"] is None


def test_env_interpolation_types_and_defaults(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(SPEC)
    spec = load_spec(p, {"FLAG": "false", "CHUNK": "1000"})
    assert spec.enabled is False and spec.source.chunk_size == 1000
    spec = load_spec(p, {})
    assert spec.enabled is True and spec.source.chunk_size == 250


def test_url_password_is_redacted_everywhere():
    assert redact("mysql+pymysql://me:hunter22@db/x failed") == "mysql+pymysql://me:***@db/x failed"


@pytest.mark.parametrize("value,ok", [("chloé@exämple.fr", True), ("a.b+c@x.co", True), ("bob@", False),
                                      ("n/a", False), ("a@b", False), ("x@@y.com", False), ("a b@c.com", False)])
def test_email_validator_accepts_international_addresses(value, ok):
    from syncrunner.core.validators import email
    if ok:
        email(value)
    else:
        with pytest.raises(ValueError):
            email(value)


def test_url_variables_hide_only_their_password():
    from syncrunner.spec.envvars import interpolate
    interpolate({"a": "${API_BASE_URL}", "b": "${DB_URL}"},
                {"API_BASE_URL": "https://api.example.com", "DB_URL": "postgresql://u:pw-1234@h/db"})
    assert redact("GET https://api.example.com/x") == "GET https://api.example.com/x"
    assert "pw-1234" not in redact("error for postgresql://u:pw-1234@h/db and pw-1234")


def test_naive_window_bounds_cover_the_repeated_hour_when_clocks_fall_back(tmp_path):
    """New York fell back at 2024-11-03 06:00 UTC: local 01:00-02:00 happened twice."""
    from syncrunner.sources.sql import SqlSource
    p = tmp_path / "s.yaml"
    p.write_text(SPEC)
    src = SqlSource(load_spec(p, {}))
    utc = dt.timezone.utc
    # 05:50 UTC is 01:50 EDT (first pass); rows stamped 01:10 EST (06:10 UTC) come later in time
    assert src._bind_bound(dt.datetime(2024, 11, 3, 5, 50, tzinfo=utc), lower=True) == dt.datetime(2024, 11, 3, 0, 50)
    # on an ordinary day the bound is just local time
    assert src._bind_bound(dt.datetime(2024, 7, 1, 12, 0, tzinfo=utc), lower=True) == dt.datetime(2024, 7, 1, 8, 0)
    assert src._bind_bound(dt.datetime(2024, 7, 1, 12, 0, tzinfo=utc), lower=False) == dt.datetime(2024, 7, 1, 8, 0)
    # an upper bound just after the change reaches the end of the repeated hour's readings
    assert src._bind_bound(dt.datetime(2024, 11, 3, 6, 10, tzinfo=utc), lower=False) == dt.datetime(2024, 11, 3, 2, 10)
    src.close()


@pytest.mark.parametrize("rule", [
    "a is not none", "a is none", "not a", "a > 1", "a >= b", "1 < a <= 3", "a == 'x'", "a != none",
    "a in [1, 2]", "a not in (1, 2)", "a is not none and b > 0", "a or b", "(a > 1) or not (b < 2)",
    "a == b == 2", "a < b < c",
])
def test_fast_rules_agree_with_jinja(rule):
    from syncrunner.core.mapping import fast_rule
    from syncrunner.core.templating import compile_expression
    fast, slow = fast_rule(rule, {"a", "b", "c"}), compile_expression(rule)
    assert fast is not None
    for row in [{"a": 1, "b": 2, "c": 3}, {"a": None, "b": 0, "c": 1}, {"a": 2, "b": 2, "c": 2},
                {"a": "x", "b": None, "c": 0}, {"a": 5, "b": 1, "c": 9}]:
        try:
            want = ("ok", slow(**row))
        except Exception as e:  # noqa: BLE001
            want = ("raises", type(e))
        try:
            got = ("ok", fast(row))
        except Exception as e:  # noqa: BLE001
            got = ("raises", type(e))
        assert got == want, (rule, row)


def test_rules_outside_the_fast_subset_still_use_jinja():
    from syncrunner.core.mapping import fast_rule
    assert fast_rule("a | length > 2", {"a"}) is None
    assert fast_rule("unknown_name > 2", {"a"}) is None
    assert fast_rule("combine(a, b) is none", {"a", "b"}) is None


@pytest.mark.parametrize("text", [
    "2023-01-01 08:00:37", "2023-01-01 08:00:37.1", "2023-01-01 08:00:37.12", "2023-01-01 08:00:37.123456",
    "9999-12-31 23:59:59.999999", "0000-00-00 00:00:00", "2023-02-30 00:00:00", "2023-01-01", "garbage",
    "2023-01-01T08:00:00", "2023-01-01 08:00:00+05:00",
])
def test_fast_datetime_converter_matches_each_drivers_own(text):
    """PyMySQL's and (when installed, the mysql-c extra) mysqlclient's DATETIME converters."""
    from pymysql.converters import convert_datetime
    from syncrunner.sources.sql import iso_datetime
    drivers = [convert_datetime]
    try:
        from MySQLdb.times import DateTime_or_None
        drivers.append(DateTime_or_None)
    except ImportError:
        pass
    for own in drivers:
        fast = iso_datetime(own)
        assert fast(text) == own(text) and type(fast(text)) is type(own(text))


def test_empty_string_is_not_checked_but_stays_empty(mapper):
    row = mapper.map(good(email="", phone="", site="", stage="", code=""))
    assert (row["email"], row["phone"], row["site"], row["stage"], row["code"]) == ("", "", "", "", "")
    assert mapper.warnings == []


@pytest.mark.parametrize("value,ok", [("(555) 123-4567", True), ("973-432-6531 ext 12", True), ("+1 212 555 0100 x3", True),
                                      ("555.123.4567 #7", True), ("123", False), ("see notes", False),
                                      ("555-CALL-NOW", False), ("n/a", False)])
def test_phone_validator_accepts_extensions(value, ok):
    from syncrunner.core.validators import phone
    if ok:
        phone(value)
    else:
        with pytest.raises(ValueError):
            phone(value)


@pytest.mark.parametrize("zone", ["America/New_York", "Australia/Lord_Howe", "America/Havana", "Asia/Kolkata"])
def test_naive_timestamps_map_to_the_same_utc_instant_on_the_day_offset_fast_path(zone, tmp_path):
    """The compiled mapping converts naive values with a per-day offset once a day has been seen;
    every value, around DST changes (30-minute ones and midnight ones included), must equal ZoneInfo's."""
    import datetime as dt
    from zoneinfo import ZoneInfo
    p = tmp_path / "s.yaml"
    p.write_text(f"crm: t\nentity: e\nsource: {{kind: sql, url: 'sqlite:///x.db', query: SELECT 1, key: id, "
                 f"timezone: {zone}}}\ntarget: {{table: e, key: [id]}}\n"
                 f"fields:\n  id: {{type: integer}}\n  at: {{type: datetime}}\n")
    mapper = Mapper(load_spec(p))
    tz, t, fast = ZoneInfo(zone), dt.datetime(2023, 1, 1), 0
    while t < dt.datetime(2024, 1, 1):
        for _ in range(2):  # the first sight of a day teaches the offset, the second uses it
            got = mapper.map({"id": 1, "at": t})["at"]
            assert got == t.replace(tzinfo=tz).astimezone(dt.timezone.utc) and got.tzinfo is dt.timezone.utc, t
        fast += mapper._offsets.get(t.toordinal()) is not None
        t += dt.timedelta(minutes=37)
    assert fast > 13000  # the fast path really ran


NESTED_SPEC = """
crm: t
entity: nested
source: {kind: http, base_url: "http://x", request: {path: /events}, records: "@", key: id}
target: {table: t_nested, key: [id]}
fields:
  id:             {from: id, type: string, required: true}
  email:          {from: vars.lead.email, type: string}
  primary_email:  {from: "emails[?primary].value | [0]", type: string}
  first_phone:    {from: "phones[0].number", type: string}
  last_phone:     {from: "phones[-1].number", type: string}
  tags:           {from: "join(', ', tags)", type: string}
  tags_list:      {from: tags, type: string}
  outcomes:       {from: "vars.appended.*.outcome", type: json}
  outcomes_text:  {from: "join(',', sort(vars.appended.*.outcome || `[]`))", type: string}
  valid_email:    {from: "vars.appended.briteverify.email.status", type: string}
  two_fa:         {from: '"2fa_enabled"', type: boolean}
  lead_source:    {from: 'vars."lead-source"', type: string}
  utm_source:     {from: 'vars."utm source"', type: string}
  phone_or_null:  {from: "vars.lead.phone_1 || null", type: string}
"""


def nested_record(**over):
    rec = {"id": "e1", "vars": {"lead": {"email": "ana@example.com", "phone_1": ""},
                                "appended": {"briteverify": {"outcome": "success", "email": {"status": "valid"}},
                                             "trustedform": {"outcome": "failure"}},
                                "lead-source": "web", "utm source": "google"},
           "emails": [{"value": "old@example.com", "primary": False}, {"value": "ana@example.com", "primary": True}],
           "phones": [{"number": "5125550100"}, {"number": "5125550199"}], "tags": ["solar", "tx"],
           "2fa_enabled": "yes"}
    rec.update(over)
    return rec


def test_nested_paths_arrays_filters_joins_and_quoted_keys_map_from_yaml(tmp_path):
    """The mapping language is jmespath: nested objects, list elements, filters, projections over
    every key of an object, joins, and keys that start with a digit or hold a dash or a space."""
    from syncrunner.spec.load import check_spec
    p = tmp_path / "nested.yaml"
    p.write_text(NESTED_SPEC)
    _, problems = check_spec(p, {}, strict_env=False)
    assert [x for x in problems if x.severity == "error"] == []
    mapper = Mapper(load_spec(p, {}))
    row = mapper.map(nested_record())
    assert row == {"id": "e1", "email": "ana@example.com", "primary_email": "ana@example.com",
                   "first_phone": "5125550100", "last_phone": "5125550199", "tags": "solar, tx",
                   "tags_list": '["solar", "tx"]', "outcomes": ["success", "failure"],
                   "outcomes_text": "failure,success", "valid_email": "valid", "two_fa": True,
                   "lead_source": "web", "utm_source": "google", "phone_or_null": None}
    # absent parts give NULL, not an error: no primary email, no phones, no appended data
    sparse = mapper.map(nested_record(emails=[{"value": "x@example.com", "primary": False}], phones=[],
                                      vars={"lead": {"phone_1": "5125550100"}}))
    assert (sparse["primary_email"], sparse["first_phone"], sparse["outcomes"], sparse["valid_email"],
            sparse["phone_or_null"]) == (None, None, None, None, "5125550100")
    assert sparse["outcomes_text"] == ""  # a function over nothing needs a default: `|| `[]``


@pytest.mark.parametrize("path", ["2fa_enabled", "vars.lead-source"])
def test_an_unquoted_key_with_a_digit_or_dash_is_a_lint_error_with_the_fix(tmp_path, path):
    from syncrunner.spec.load import check_spec
    p = tmp_path / "nested.yaml"
    p.write_text(NESTED_SPEC.replace("""{from: 'vars."lead-source"', type: string}""",
                                     f"{{from: '{path}', type: string}}"))
    _, problems = check_spec(p, {}, strict_env=False)
    errors = [str(x) for x in problems if x.severity == "error"]
    assert len(errors) == 1 and "fields.lead_source.from" in errors[0] and ":18:" in errors[0]
    assert 'quote it in double quotes' in errors[0]
