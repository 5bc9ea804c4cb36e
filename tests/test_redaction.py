"""Secrets in every encoding (issue 21, item 2).

An API that echoes the request (tests/fakes/echo.py: httpbin's document in its error body, `self`
links in records, base64 cursors) is synced by the CLI with four auth styles and nasty secrets
(`+/=`, `&`, quotes, backslash, non-ASCII). No form of any secret (raw, percent-encoded either way
and in either hex case, base64 of every kind, JSON-escaped) may appear in stdout or stderr (text and
JSON logs, --debug), in any text column of any table of the target, in `history --json`, in `plan`,
or in any file the commands wrote."""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import sqlalchemy as sa

from syncrunner.core.redact import redact, register_auth_name, register_basic_auth, register_secret
from tests.fakes.echo import EchoAPI

KEY = "Tk+9f8e/7d6c5b4a=="                 # the API key, sent as ?api_key=
PASSWORD = "p&ss\"w'rd\\x/y+z=é"           # basic auth (user svc)
HEADER = "clé-secrète/ü+ß="                # an auth header, from a variable whose name looks harmless
ACCESS = "日本-ключ/+&=%41"                 # a query parameter, idem
PLAIN = "plain-Header/Value+42"            # a request header (not auth) named X-Auth-Token

SPEC = """\
crm: echo
entity: {entity}
source:
  kind: http
  base_url: {base}
  auth: {auth}
  request: {{path: /items, params: {{style: {style}}}, headers: {headers}}}
  records: data
  pagination: {{type: cursor, param: cursor, next: next}}
  cursor: updated
  key: id
  chunk_size: 2
target: {{table: echo_{entity}, key: [id]}}
fields:
  id: {{type: integer, required: true}}
  email: {{type: string, validators: [email]}}
  updated: {{type: datetime}}
"""
SPECS = {
    "key": ("{type: query, param: api_key, value: '${ECHO_API_KEY}'}", "python", "{X-Auth-Token: '${HEADER_VALUE}'}"),
    "basic": ("{type: basic, username: svc, password: '${ECHO_PASSWORD}'}", "php", "{}"),
    "header": ("{type: header, name: Api-Key, value: '${ECHO_HDR}'}", "php", "{}"),
    "access": ("{type: query, param: access, value: '${ECHO_ACCESS}'}", "python", "{}"),
}
ENV = {"ECHO_API_KEY": KEY, "ECHO_PASSWORD": PASSWORD, "ECHO_HDR": HEADER, "ECHO_ACCESS": ACCESS,
       "HEADER_VALUE": PLAIN}


def leak_forms(secret: str, encodings: tuple[str, ...] = ("utf-8",)) -> set[str]:
    """What a secret looks like raw, percent-encoded (quote, quote_plus; upper and lower hex),
    base64 (standard, urlsafe, padded or not) and JSON-escaped (ASCII or not, `/` as `\\/`)."""
    pct = {quote(secret, safe=""), quote(secret), quote_plus(secret)}
    pct |= {re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), p) for p in pct}
    b64 = set()
    for enc in encodings:
        data = secret.encode(enc)
        b64 |= {base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode()}
    b64 |= {b.rstrip("=") for b in b64}
    js = {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    js |= {j.replace("/", "\\/") for j in js}
    return {f for f in {secret} | pct | b64 | js if len(f) >= 6}


def all_forms() -> dict[str, set[str]]:
    forms = {s: leak_forms(s) for s in (KEY, PASSWORD, HEADER, ACCESS)}
    forms["svc:" + PASSWORD] = leak_forms("svc:" + PASSWORD, ("utf-8", "latin-1"))  # the Basic header
    forms[PLAIN] = {PLAIN, json.dumps(PLAIN)[1:-1], PLAIN.replace("/", "\\/")}  # hidden by position
    return forms


def assert_no_secret(text: str, where: str) -> None:
    for secret, forms in all_forms().items():
        for form in forms:
            assert form not in text, f"{where}: {secret!r} as {form!r}:\n{text[:4000]}"


def _cli(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from syncrunner.cli import main; main()", *args],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=180)


def _dump_every_text_column(url: str) -> str:
    engine = sa.create_engine(url)
    out = []
    with engine.connect() as c:
        for table in sa.inspect(c).get_table_names():
            out += [f"{table}: {row}" for row in c.execute(sa.text(f'SELECT * FROM "{table}"'))]
    engine.dispose()
    return "\n".join(out)


def _rows(url: str, sql: str) -> list:
    engine = sa.create_engine(url)
    with engine.connect() as c:
        out = [tuple(r) for r in c.execute(sa.text(sql))]
    engine.dispose()
    return out


@pytest.fixture(params=["sqlite_url", "pg_url"])
def target(request):
    return request.getfixturevalue(request.param)


def test_no_secret_in_any_encoding_anywhere(tmp_path, target):
    accept = [("api_key", KEY), ("basic", "svc:" + PASSWORD), ("Api-Key", HEADER), ("access", ACCESS)]
    with EchoAPI(accept) as api:
        (tmp_path / "specs").mkdir()
        for entity, (auth, style, headers) in SPECS.items():
            (tmp_path / "specs" / f"{entity}.yaml").write_text(SPEC.format(
                entity=entity, base=api.base_url, auth=auth, style=style, headers=headers))
        env = {**os.environ, **ENV, "SYNCRUNNER_TARGET_URL": target, "PYTHONPATH": os.getcwd(),
               "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
        commands = [(["run", "specs/", "--debug"], 1),
                    (["run", "specs/", "--debug", "--log-format", "json", "--json"], 1),
                    (["run", "specs/key.yaml", "--dry-run", "--debug"], 1),
                    (["history"], 0), (["history", "--json"], 0)]
        commands += [(["plan", f"specs/{e}.yaml"], 0) for e in SPECS]
        outputs = []
        for args, code in commands:
            res = _cli(args, env, tmp_path)
            out = res.stdout + res.stderr
            assert res.returncode == code, (args, out[-3000:])
            assert_no_secret(out, " ".join(args))
            outputs.append(res)
        # every secret did travel, in every style the fake has
        sent = json.dumps(api.seen, ensure_ascii=False)
        for secret in (KEY, HEADER, ACCESS, PLAIN, "Basic " + base64.b64encode(("svc:" + PASSWORD).encode("latin-1")).decode()):
            assert json.dumps(secret, ensure_ascii=False)[1:-1] in sent, secret

    everything = "\n".join(r.stdout + r.stderr for r in outputs)
    # redacted, not left out: the request lines and the echoed error bodies are there
    assert "&api_key=*** HTTP/1.1" in everything and "cursor=" in everything
    assert '"X-Auth-Token": "***"' in everything and '"Authorization": "Basic ***"' in everything
    assert len(json.loads(outputs[1].stdout)["entities"]) == len(SPECS)   # redacted JSON stays JSON
    history = json.loads(outputs[4].stdout)
    assert {r["status"] for r in history} == {"failed"} and all("HTTP 400" in r["error"] for r in history)

    dump = _dump_every_text_column(target)
    assert "sync_dead_letters" in dump and "not-an-email" in dump and "api_key=***" in dump
    # the second run re-read each bad record: known by its redacted raw record, so kept once
    assert _rows(target, "SELECT sync_type, record_key, COUNT(*) FROM sync_dead_letters GROUP BY sync_type, "
                         "record_key HAVING COUNT(*) > 1") == []
    assert_no_secret(dump, "target tables")
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert_no_secret(path.read_bytes().decode("utf-8", "replace"), str(path))


def test_redact_hides_each_encoding():
    """Every form of each nasty secret, alone or inside text, inside `user:password` base64, inside
    a base64 token that was then percent-encoded, JSON-escaped twice."""
    secrets = [KEY, PASSWORD, HEADER, ACCESS, "sk_live_0123456789abcdef"]
    for s in secrets:
        register_secret(s)
    register_basic_auth("svc", PASSWORD)
    for s in secrets:
        for form in leak_forms(s):
            assert redact(f"<{form}>") == "<***>", (s, form)
        token = base64.b64encode(json.dumps({"q": {"key": s}, "page": 2}).encode()).decode()
        lower_hex = re.sub("%..", lambda m: m.group().lower(), quote(token, safe=""))
        for text in (token, quote_plus(token), lower_hex, json.dumps(json.dumps({"key": s}))):
            assert "***" in redact(text) and not any(f in redact(text) for f in leak_forms(s)), (s, text)
        for offset in ("", "a", "ab"):
            inner = base64.b64encode(f"{offset}:{s}!".encode()).decode()
            out = redact(inner)
            assert "***" in out and len(out) < len(inner) - 4, (s, inner, out)
    basic = base64.b64encode(("svc:" + PASSWORD).encode("latin-1")).decode()
    assert redact(f"Basic {basic}") == "Basic ***"
    assert redact("chunk 3 written: 1,000 records in 0.4 s") == "chunk 3 written: 1,000 records in 0.4 s"


@pytest.mark.parametrize("text,shown", [
    ("GET /x?limit=25&api_key=NotRegistered1&page=2", "GET /x?limit=25&api_key=***&page=2"),
    ('{"headers": {"X-Auth-Token": "NotRegistered2", "Accept": "json"}}', '{"headers": {"X-Auth-Token": "***", "Accept": "json"}}'),
    ("{'authorization': 'Bearer NotRegistered3'}", "{'authorization': 'Bearer ***'}"),
    ("Authorization: Token token=\"NotRegistered4\"\nnext", "Authorization: Token ***\nnext"),
    ('{"Authorization": "Token token=\\"NotRegistered5\\"", "a": 1}', '{"Authorization": "Token ***", "a": 1}'),
    ("api-key: NotRegistered6", "api-key: ***"),
    ("X-AUTH-KEY: NotRegistered7, then", "X-AUTH-KEY: ***, then"),
    ("postgresql://me:NotRegistered8@db/x", "postgresql://me:***@db/x"),
    ('"url": "https:\\/\\/me:NotRegistered9@h\\/x"', '"url": "https:\\/\\/me:***@h\\/x"'),
    ("next=https%3A%2F%2Fh%2Fx%3Fa%3D1%26api_key%3DNotRegistered10%26b%3D2", "next=https%3A%2F%2Fh%2Fx%3Fa%3D1%26api_key%3D***%26b%3D2"),
    ("the API refused the Authorization header (from ${X_KEY}); check it", "the API refused the Authorization header (from ${X_KEY}); check it"),
    ("spec.yaml:4: source.auth.token: is required", "spec.yaml:4: source.auth.token: is required"),
])
def test_credentials_are_hidden_by_position_unregistered(text, shown):
    assert redact(text) == shown


def test_a_spec_named_auth_parameter_or_header_is_hidden_by_position():
    register_auth_name("sig")
    register_auth_name("X-Vendor-Cred")
    assert redact("GET /x?sig=NotRegistered11&page=2") == "GET /x?sig=***&page=2"
    assert redact("x-vendor-cred: NotRegistered12") == "x-vendor-cred: ***"
    assert redact('{"X-Vendor-Cred": "NotRegistered13"}') == '{"X-Vendor-Cred": "***"}'


def test_the_newer_auth_types_register_their_secrets_and_header_names(tmp_path):
    """`headers` (several credential headers, Arrivy), `hmac` (MarketSharp) and
    `google_service_account` (the key file's PEM lines and key id) hide what they read, in every
    encoding, and their header names hide any value by position."""
    pytest.importorskip("cryptography")  # comes with the `google` extra (scripts/setup installs it)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from syncrunner.sources.http.auth import Auth
    from syncrunner.sources.http.googleauth import _read_key

    vendor, hdr = "vendor-id-7788aa", "hdr-s3cret/+=ü"
    Auth.from_options({"type": "headers", "headers": {"X-Vendor-Id": vendor, "X-Vendor-Sig": hdr}})
    key64 = base64.b64encode(b"hmac-key-0123456789abcdef").decode()
    signer = Auth.from_options({"type": "hmac", "header": "X-Signed", "secret": key64, "secret_encoding": "base64",
                                "message": "acct{epoch}", "value": "acct:{epoch}:{signature}"}).signer
    for secret in (vendor, hdr, key64):
        for form in leak_forms(secret):
            assert form not in redact(f"error body: {form} !"), (secret, form)
    signed = signer.sign(1700000000)
    for name in ("X-Vendor-Id", "X-Vendor-Sig", "X-Signed"):  # any value, registered or not
        assert "nothing-registered-42" not in redact(f"{name}: nothing-registered-42")
    assert signed.split(":")[-1] not in redact(f"X-Signed: {signed}")

    pem = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps({"type": "service_account", "private_key": pem, "private_key_id": "abcdef0123456789",
                                    "client_email": "x@y.iam.gserviceaccount.com"}))
    _read_key(str(key_file), "service-account key file")
    shown = redact(f"invalid_grant for {json.dumps(pem)} (key abcdef0123456789)")
    assert "abcdef0123456789" not in shown
    # every full line of the key body (a short last line, under 16 characters, is not registered:
    # so few characters would also hide unrelated text, and tell nothing of the key)
    assert not any(line in shown for line in pem.splitlines() if "PRIVATE KEY" not in line and len(line) >= 16)
