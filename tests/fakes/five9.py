"""Fake Five9 Configuration Web Services (SOAP 1.1 over HTTPS, basic auth): `getContactRecords`.

Built from public material (reference, not copied):
- Five9 Configuration Web Services API Reference Guide (Oct 2023, 247 pages; copies at
  https://vdocument.in/configuration-web-services-five9-2-configuration-web-services-a-api-reference.html
  and https://kipdf.com/configuration-web-services_5b3af72b097c47977e8b4642.html): SOAP endpoint
  `https://api.five9.com/wsadmin/v13/AdminWebService`, namespace `http://service.admin.ws.five9.com/`,
  HTTP basic authentication with an administrator's user name and password.
- The request and response shapes as a PHP client printed them (github.com/kielerrr/Five9,
  contacts/getContactRecords.php): `<lookupCriteria>` holds `<contactIdField>` (the name under which
  the contact's internal id is returned) and `<criteria><field/><value/></criteria>` pairs; the
  answer's `<return>` holds one `<fields>` per field name (the internal id first when asked for) and
  one `<records><values><data/>...</values></records>` per contact, values in the order of `fields`,
  empty fields as empty `<data/>`.
- "Returns a maximum of 1000 records per call" (PSFive9Admin's Get-Five9ContactRecord help);
  `%` is a wildcard in criteria values (same source). There is no paging and no range operator: a
  caller sees at most the first 1,000 matches, so this fake cuts the answer there, silently, as the
  API does.
- Rate limits: leaky bucket; over the limit the API answers HTTP 429 Too Many Requests
  (https://docs.datagrail.io/docs/integrations/api-documentation/five9).
- A DATE_TIME contact field mapped to `LastModifiedDateTime` is maintained by Five9 (python-five9's
  README, https://pypi.org/project/five9/: createContactField(... mapTo='LastModifiedDateTime',
  type='DATE_TIME')). Its text here is `yyyy-MM-dd HH:mm:ss.SSS` in the domain's time zone (the
  fake's `zone`), without an offset: the trap is that it is local time.
- Errors: a SOAP 1.1 fault (HTTP 500, `env:Envelope/env:Body/env:Fault` with faultcode and
  faultstring) for a request the service refuses (an unknown contact field in the criteria); HTTP
  401 for refused credentials. The exact fault strings are not published; these are modelled.

Test hooks: `seed(n)`, `touch(ids)`, `update(id, **fields)`, `inject(429)` (restkit), `hostile` (the
next answer is the given XML text, e.g. with an external entity), `requests_bodies` (what was sent).
"""
from __future__ import annotations

import base64
import itertools
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from .restkit import ScriptedFake
from .server import Request, Response, route

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
F9 = "http://service.admin.ws.five9.com/"
MAX_RECORDS = 1000
FIELDS = ["number1", "first_name", "last_name", "email", "street", "city", "state", "zip", "modified_at"]


def envelope(inner: str) -> bytes:
    return (f'<env:Envelope xmlns:env="{SOAP_ENV}"><env:Header/><env:Body>{inner}</env:Body>'
            f'</env:Envelope>').encode()


def fault(code: str, text: str) -> bytes:
    return envelope(f"<env:Fault><faultcode>{code}</faultcode><faultstring>{escape(text)}</faultstring>"
                    f"</env:Fault>")


class FakeFive9(ScriptedFake):
    def __init__(self, user: str, password: str, zone: str = "America/Los_Angeles", **kwargs) -> None:
        self.user, self.password = user, password
        self.zone = ZoneInfo(zone)
        self.contacts: dict[int, dict[str, str]] = {}
        self._ids = itertools.count(1001)
        self._clock = datetime(2024, 1, 1, 12, 0, tzinfo=timezone.utc)
        self.hostile: bytes | None = None
        self.request_bodies: list[bytes] = []
        super().__init__(**kwargs)

    def routes(self):
        return [route("POST", r"/wsadmin/(?:v[0-9_]+/)?AdminWebService", self.soap)]

    # -- data -------------------------------------------------------------------------------------
    def stamp(self, when: datetime) -> str:
        return when.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]

    def tick(self) -> datetime:
        self._clock += timedelta(seconds=1)
        return self._clock

    def seed(self, n: int) -> list[int]:
        ids = []
        for _ in range(n):
            cid = next(self._ids)
            self.contacts[cid] = {
                "number1": f"925555{cid:04d}", "first_name": f"First{cid}", "last_name": f"Last{cid}",
                "email": f"contact{cid}@example.com", "street": f"{cid} Main St", "city": "Dallas",
                "state": "TX", "zip": "75201", "modified_at": self.stamp(self.tick())}
            ids.append(cid)
        return ids

    def update(self, cid: int, **fields: str) -> None:
        self.contacts[cid].update(fields)
        self.contacts[cid]["modified_at"] = self.stamp(self.tick())

    # -- SOAP -------------------------------------------------------------------------------------
    def is_authorized(self, req: Request) -> bool:
        expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return req.headers.get("authorization") == f"Basic {expected}"

    def unauthorized(self, req: Request) -> Response:
        return Response(401, b"<html><body><h1>HTTP Status 401 - Unauthorized</h1></body></html>",
                        {"WWW-Authenticate": 'Basic realm="Five9"', "Content-Type": "text/html"})

    def rate_limited(self, req: Request) -> Response:
        return Response(429, b"Too Many Requests", {"Content-Type": "text/plain"})

    def server_error(self, req: Request, status: int) -> Response:
        return Response(status, fault("env:Server", "Internal error"), {"Content-Type": "text/xml"})

    def _xml(self, status: int, body: bytes) -> Response:
        return Response(status, body, {"Content-Type": "text/xml;charset=UTF-8"})

    def soap(self, req: Request) -> Response:
        self.request_bodies.append(req.raw_body)
        if self.hostile is not None:
            body, self.hostile = self.hostile, None
            return self._xml(200, body)
        try:
            doc = ET.fromstring(req.raw_body)
        except ET.ParseError as e:
            return self._xml(500, fault("env:Client", f"Unmarshalling Error: {e}"))
        call = doc.find(f"{{{SOAP_ENV}}}Body/{{{F9}}}getContactRecords")
        if call is None:
            return self._xml(500, fault("env:Client", "Cannot find dispatch method"))
        lookup = call.find("lookupCriteria")
        id_field = lookup.findtext("contactIdField") if lookup is not None else None
        criteria = [(c.findtext("field") or "", c.findtext("value") or "")
                    for c in (lookup.findall("criteria") if lookup is not None else [])]
        for name, _ in criteria:
            if name not in FIELDS:
                return self._xml(500, fault("env:Server", f"Contact field '{name}' doesn't exist"))
        matches = [(cid, c) for cid, c in sorted(self.contacts.items())
                   if all(_like(c.get(f, ""), v) for f, v in criteria)][:MAX_RECORDS]
        return self._xml(200, envelope(self._answer(id_field, matches)))

    def _answer(self, id_field: str | None, matches: list[tuple[int, dict]]) -> str:
        names = ([id_field] if id_field else []) + FIELDS
        head = "".join(f"<fields>{escape(n)}</fields>" for n in names)
        rows = []
        for cid, c in matches:
            values = ([str(cid)] if id_field else []) + [c.get(f, "") for f in FIELDS]
            rows.append("<records><values>" + "".join(f"<data>{escape(v)}</data>" if v else "<data/>"
                                                      for v in values) + "</values></records>")
        return f'<ns2:getContactRecordsResponse xmlns:ns2="{F9}"><return>{head}{"".join(rows)}</return>' \
               f"</ns2:getContactRecordsResponse>"


def _like(value: str, pattern: str) -> bool:
    """Five9 criteria: exact match, `%` a wildcard."""
    if "%" not in pattern:
        return value == pattern
    import fnmatch
    return fnmatch.fnmatchcase(value, pattern.replace("*", "[*]").replace("?", "[?]").replace("%", "*"))
