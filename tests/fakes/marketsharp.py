"""Fake MarketSharp data service: a read-only OData v2 service (WCF Data Services), `Contacts`.

Built from public material (reference, not copied):
- MarketSharp API Documentation
  (https://support.marketsharp.com/hc/en-us/articles/1500011603421-MarketSharp-API-Documentation):
  read-only OData, GET only, at `https://api4.marketsharpm.com/WcfDataService.svc`; every request
  carries `Authorization: companyID:APIkey:epoch:hash`, the hash being base64(HMAC-SHA256(key =
  base64-decoded secret key, message = companyID + APIkey + epoch)), epoch in whole Unix seconds.
  MarketSharp does not publish rate limits or the page size; the service is unsupported by them.
- A client of it (github.com/customerlobby/market_sharp): the same header built the same way
  (connection.rb); `Contacts` queried with `$filter=lastUpdate ge datetime'2016-08-19T11:53:09'`,
  `$orderby=lastUpdate asc`, `$skip`/`$top` (client/customers.rb); a Contact's properties (id a
  GUID, firstName, lastName, email1, creationDate, lastUpdate, isActive, ...) in
  spec/fixtures/customers.xml. The vendor's Java sample notes "contactType of 1 = Prospect, 2 =
  Lead, 3 = Customer": leads are `contactType eq 2`.
- OData v2 JSON ("verbose") format, https://www.odata.org/documentation/odata-version-2-0/json-format/:
  a collection is `{"d": {"results": [...], "__next": "<url>"}}` (`__count` with `$inlinecount=allpages`);
  every entity has `__metadata` (uri, type); DateTime values are `"\\/Date(<ms since epoch>)\\/"`.
  Errors are `{"error": {"code": "", "message": {"lang": "en-US", "value": "..."}}}`.
- Server-driven paging of WCF Data Services (SetEntitySetPageSize): a page holds at most the
  service's page size (here 250, an assumption) and ends with `__next`, the same query plus
  `$skiptoken=<orderby values>,<key>` of the last entity, i.e. a keyset: an entity modified between
  pages moves to its new place instead of shifting the others.
- Microsoft's JSON date (DataContractJsonSerializer, https://www.github.com/stav/deno-date-wire quotes
  the docs): `/Date(700000+0500)/`: milliseconds since 1970 UTC; the offset only marks local kind.

Test hooks: `seed(n)`, `update(id, **props)` (bumps lastUpdate), `page_hook(entity, page)` (restkit,
runs before a page is built), `inject(429|503)`, `requests_seen` (the parsed queries).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

from .restkit import BadRequest, ScriptedFake
from .server import Request, Response, route

PAGE_SIZE = 250
CLOCK_SKEW_S = 300
_COND = re.compile(r"\s*(\w+)\s+(eq|ne|ge|gt|le|lt)\s+(datetime'[^']*'|'[^']*'|-?\d+|true|false|null)\s*")


def ms_date(moment: datetime | None, offset: str = "") -> str | None:
    if moment is None:
        return None
    return f"/Date({int(round(moment.timestamp() * 1000))}{offset})/"


def literal(text: str):
    if text.startswith("datetime'"):
        value = datetime.fromisoformat(text[9:-1])
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
    if text.startswith("'"):
        return text[1:-1]
    return {"true": True, "false": False, "null": None}.get(text, int(text) if text.lstrip("-").isdigit() else text)


class FakeMarketSharp(ScriptedFake):
    def __init__(self, company_id: str, api_key: str, secret_b64: str, **kwargs) -> None:
        self.company_id, self.api_key, self.secret_b64 = company_id, api_key, secret_b64
        self.contacts: dict[str, dict] = {}
        self._clock = datetime(2024, 3, 1, 15, 0, tzinfo=timezone.utc)
        self.requests_seen: list[dict[str, str]] = []
        self.page_size = PAGE_SIZE
        super().__init__(**kwargs)

    def routes(self):
        return [route("GET", r"/WcfDataService\.svc/Contacts", self.list_contacts)]

    # -- data -------------------------------------------------------------------------------------
    def tick(self, ms: int = 1000) -> datetime:
        self._clock += timedelta(milliseconds=ms)
        return self._clock

    def seed(self, n: int, contact_type: int = 2, same_ms: int = 1) -> list[str]:
        ids = []
        for i in range(n):
            cid = str(uuid.UUID(int=len(self.contacts) + 1))
            when = self.tick() if i % same_ms == 0 else self._clock
            self.contacts[cid] = {"id": cid, "companyId": int(self.company_id), "contactType": contact_type,
                                  "firstName": f"First{len(self.contacts)}", "lastName": f"Last{len(self.contacts)}",
                                  "email1": f"lead{len(self.contacts)}@example.com", "isActive": True,
                                  "creationDate": when, "lastUpdate": when}
            ids.append(cid)
        return ids

    def update(self, cid: str, **props) -> None:
        self.contacts[cid].update(props)
        self.contacts[cid]["lastUpdate"] = self.tick(7)

    # -- auth, errors -----------------------------------------------------------------------------
    def expected_auth(self, epoch: int) -> str:
        message = f"{self.company_id}{self.api_key}{epoch}".encode()
        digest = hmac.new(base64.b64decode(self.secret_b64), message, hashlib.sha256).digest()
        return f"{self.company_id}:{self.api_key}:{epoch}:{base64.b64encode(digest).decode()}"

    def is_authorized(self, req: Request) -> bool:
        parts = req.headers.get("authorization", "").split(":")
        if len(parts) != 4 or not parts[2].isdigit() or abs(int(parts[2]) - time.time()) > CLOCK_SKEW_S:
            return False
        return hmac.compare_digest(req.headers["authorization"], self.expected_auth(int(parts[2])))

    def error(self, status: int, text: str) -> Response:
        return Response(status, {"error": {"code": "", "message": {"lang": "en-US", "value": text}}})

    def unauthorized(self, req: Request) -> Response:
        return self.error(401, "Unauthorized: the authorization header is not valid.")

    def rate_limited(self, req: Request) -> Response:
        return self.error(429, "Too many requests.")

    def server_error(self, req: Request, status: int) -> Response:
        return self.error(status, "An error occurred while processing this request.")

    def not_found(self, req: Request) -> Response:
        return self.error(404, "Resource not found for the segment.")

    # -- the collection ---------------------------------------------------------------------------
    def list_contacts(self, req: Request) -> Response:
        q = {k: v[0] for k, v in req.query.items()}
        self.requests_seen.append(q)
        try:
            conds = self._filter(q.get("$filter", ""))
            order = q.get("$orderby", "id").split()
            top = int(q.get("$top", 10**9))
            skip = int(q.get("$skip", 0))
        except (BadRequest, ValueError) as e:
            return self.error(400, f"Syntax error in $filter or query options: {e}")
        field, desc = order[0], len(order) > 1 and order[1] == "desc"
        page_no = len(self.requests_seen)
        self.before_page("Contacts", page_no)
        rows = sorted((c for c in self.contacts.values() if all(_holds(c, *cond) for cond in conds)),
                      key=lambda c: (c[field], c["id"]), reverse=desc)
        if q.get("$skiptoken"):
            rows = self._after(rows, field, q["$skiptoken"])
        rows = rows[skip:skip + top]
        page, more = rows[:self.page_size], len(rows) > self.page_size
        d: dict = {"results": [self._entity(req, c) for c in page]}
        if q.get("$inlinecount") == "allpages":
            d["__count"] = str(len(rows))
        if more:
            last = page[-1]
            token = f"{_token(last[field])},guid'{last['id']}'"
            nq = {k: v for k, v in q.items() if k not in ("$skiptoken", "$skip")} | {"$skiptoken": token}
            if "$top" in q:
                nq["$top"] = str(top - len(page))
            d["__next"] = f"{req.base_url}/WcfDataService.svc/Contacts?{urlencode(nq)}"
        body = json.dumps({"d": d}).replace('"/Date(', '"\\/Date(').replace(')/"', ')\\/"')
        return Response(200, body.encode(), {"Content-Type": "application/json;charset=utf-8"}, page=page_no)

    def _filter(self, text: str) -> list[tuple[str, str, object]]:
        if not text.strip():
            return []
        out = []
        for part in re.split(r"\s+and\s+", text.strip()):
            m = _COND.fullmatch(part)
            if not m:
                raise BadRequest(f"cannot read '{part}'")
            out.append((m.group(1), m.group(2), literal(m.group(3))))
        return out

    def _after(self, rows: list[dict], field: str, token: str) -> list[dict]:
        value, key = token.rsplit(",guid'", 1)
        after = (literal(value), key.rstrip("'"))
        return [c for c in rows if (c[field], c["id"]) > after]

    def _entity(self, req: Request, c: dict) -> dict:
        out = dict(c)
        out["__metadata"] = {"uri": f"{req.base_url}/WcfDataService.svc/Contacts(guid'{c['id']}')",
                             "type": "MSharpModel.Contact"}
        for name in ("creationDate", "lastUpdate"):
            if isinstance(c[name], datetime):
                out[name] = ms_date(c[name], "-0400" if name == "creationDate" else "")
        return out


def _token(value) -> str:
    if isinstance(value, datetime):
        return "datetime'" + value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="milliseconds") + "'"
    return repr(value)


def _holds(c: dict, field: str, op: str, value) -> bool:
    have = c.get(field)
    if op == "eq":
        return have == value
    if op == "ne":
        return have != value
    if have is None or value is None:
        return False
    return {"ge": have >= value, "gt": have > value, "le": have <= value, "lt": have < value}[op]
