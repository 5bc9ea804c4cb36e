"""In-process fake of the Google Sheets API v4 (`spreadsheets.values.get`) and of Google's OAuth 2.0
token endpoint for service accounts (the JWT bearer grant).

Pages followed:
  * values.get: ``GET /v4/spreadsheets/{spreadsheetId}/values/{range}`` with ``majorDimension``,
    ``valueRenderOption``, ``dateTimeRenderOption``; the answer is a ValueRange
    ``{"range", "majorDimension", "values"}``. "For output, empty trailing rows and columns will not
    be included" and ``range`` "indicates the entire requested range, even though the values will
    exclude trailing rows and columns":
    https://hexdocs.pm/google_api_sheets/GoogleApi.Sheets.V4.Model.ValueRange.html ,
    https://googleworkspace.stackql.io/providers/googleworkspace/sheets/values ,
    https://googleapis.dev/ruby/google-apis-sheets_v4/v0.34.0/Google/Apis/SheetsV4/ValueRange.html
  * ValueRenderOption: FORMATTED_VALUE (the default: "calculated & formatted ... according to the
    cell's formatting", based on the spreadsheet's locale: a currency cell 1.23 reads ``"$1.23"``),
    UNFORMATTED_VALUE (the number 1.23), FORMULA:
    https://developers.google.com/sheets/reference/rest/v4/ValueRenderOption
  * DateTimeRenderOption: SERIAL_NUMBER (the default; days since 1899-12-30, the time as a
    fraction of a day) or FORMATTED_STRING; ignored with FORMATTED_VALUE:
    https://www.stackage.org/lts-24.68/hoogle?page=1027&q=read (gogol-sheets' copy of the reference)
  * Limits: per-minute read quotas (300 per project, lower per user), refilled every minute; over
    it "a 429: Too many requests" and the advice to back off exponentially:
    https://developers-dot-devsite-v2-prod.appspot.com/workspace/sheets/api/limits ; the error body
    ``{"error": {"code": 429, "message": "Quota exceeded for quota metric 'Read requests' and limit
    'Read requests per minute per user' of service 'sheets.googleapis.com' ...", "status":
    "RESOURCE_EXHAUSTED"}}``: https://errornotes.dev/en/errors/google-sheets/fix-google-sheets-api-quota-exceeded-read-requests-per-minute-per-user
  * Empty interior rows come back as ``[]``; a range with no values at all has no ``values`` key:
    https://raw.githubusercontent.com/api-evangelist/spreadsheets/refs/heads/main/json-structure/spreadsheet-range-structure.json

Where the pages are silent (Google's usual error envelope for its JSON APIs, chosen here): 401
``UNAUTHENTICATED``, 404 ``NOT_FOUND`` "Requested entity was not found.", 400 ``INVALID_ARGUMENT``
"Unable to parse range: ..."; no Retry-After on 429. The token endpoint takes the form post
``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<RS256 JWT>`` (claims iss, scope,
aud = https://oauth2.googleapis.com/token, iat, exp at most an hour later), answers ``{"access_token", "expires_in": 3599,
"token_type": "Bearer"}``, and refuses a bad signature with 400 ``{"error": "invalid_grant",
"error_description": "Invalid JWT Signature."}``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, unquote

from .restkit import ScriptedFake
from .server import Faults, Request, Response, route

EPOCH = dt.date(1899, 12, 30)
# google-auth puts Google's token endpoint in `aud` whatever the key file's token_uri says (read in
# google.oauth2.service_account.Credentials._make_authorization_grant_assertion)
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


@dataclass
class Cell:
    """A cell's value and its number format: ``currency`` ($1,234.50), ``number`` (1,234),
    ``percent`` (12%), ``date`` (m/d/yyyy), ``datetime`` (m/d/yyyy h:mm:ss), or None (as typed)."""

    value: Any
    fmt: str | None = None


class FakeSheets(ScriptedFake):
    def __init__(self, token: str = "ya29.test-token", *, faults: Faults | None = None,
                 reads_per_minute: int = 300) -> None:
        super().__init__(faults)
        self.tokens = {token}
        self.books: dict[str, dict[str, list[list[Any]]]] = {}
        self.reads_per_minute = reads_per_minute
        self._window = (0.0, 0)
        self.service_accounts: dict[str, Any] = {}  # client_email -> RSA public key
        self.token_requests = 0

    # ----- test-side data API ------------------------------------------------
    def sheet(self, spreadsheet_id: str, title: str, rows: list[list[Any]]) -> list[list[Any]]:
        self.books.setdefault(spreadsheet_id, {})[title] = rows
        return rows

    def add_service_account(self, client_email: str, public_key: Any) -> None:
        self.service_accounts[client_email] = public_key

    # ----- HTTP ------------------------------------------------------------
    def routes(self):
        return [route("GET", r"/v4/spreadsheets/(?P<book>[^/]+)/values/(?P<range>.+)", self._values),
                route("POST", r"/token", self._token)]

    def is_authorized(self, req: Request) -> bool:
        if req.path == "/token":
            return True
        auth = req.headers.get("authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.tokens

    @staticmethod
    def error(code: int, message: str, status: str) -> Response:
        return Response(code, {"error": {"code": code, "message": message, "status": status}})

    def unauthorized(self, req: Request) -> Response:
        return self.error(401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                               "token, login cookie or other valid authentication credential. See "
                               "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                          "UNAUTHENTICATED")

    def rate_limited(self, req: Request) -> Response:
        return self.error(429, "Quota exceeded for quota metric 'Read requests' and limit 'Read requests "
                               "per minute per user' of service 'sheets.googleapis.com' for consumer "
                               "'project_number:123456789'.", "RESOURCE_EXHAUSTED")

    def server_error(self, req: Request, status: int) -> Response:
        return self.error(status, "Internal error encountered.", "INTERNAL")

    def not_found(self, req: Request) -> Response:
        return self.error(404, "Requested entity was not found.", "NOT_FOUND")

    def _with_retry_after(self, resp: Response) -> Response:
        return resp  # Google sends no Retry-After: clients back off exponentially

    def _over_quota(self) -> bool:
        with self._lock:
            start, used = self._window
            now = time.monotonic()
            if now - start >= 60:
                start, used = now, 0
            self._window = (start, used + 1)
            return used >= self.reads_per_minute

    def _values(self, req: Request) -> Response:
        if self._over_quota():
            return self.rate_limited(req)
        book = self.books.get(req.params["book"])
        if book is None:
            return self.not_found(req)
        a1 = unquote(req.params["range"])
        parsed = _parse_range(a1, book)
        if parsed is None:
            return self.error(400, f"Unable to parse range: {a1}", "INVALID_ARGUMENT")
        title, c0, r0, c1, r1 = parsed
        render = req.arg("valueRenderOption") or "FORMATTED_VALUE"
        dates = req.arg("dateTimeRenderOption") or "SERIAL_NUMBER"
        major = req.arg("majorDimension") or "ROWS"
        if render not in ("FORMATTED_VALUE", "UNFORMATTED_VALUE", "FORMULA") or \
                dates not in ("SERIAL_NUMBER", "FORMATTED_STRING") or major not in ("ROWS", "COLUMNS"):
            return self.error(400, "Invalid value for an enum parameter.", "INVALID_ARGUMENT")
        grid = book[title]
        last_row = len(grid) if r1 is None else min(r1, len(grid))
        rows = [[_render(c, render, dates) for c in row[c0 - 1:c1]] for row in grid[r0 - 1:last_row]]
        if major == "COLUMNS":
            width = max((len(r) for r in rows), default=0)
            rows = [[r[i] if i < len(r) else "" for r in rows] for i in range(width)]
        rows = _trim(rows)
        end_col = _col_name(c1) if c1 else _col_name(max((len(r) for r in grid), default=1))
        body: dict[str, Any] = {"range": f"{_quote(title)}!{_col_name(c0)}{r0}:{end_col}{r1 or max(len(grid), r0)}",
                                "majorDimension": major}
        if rows:
            body["values"] = rows
        return Response(200, body)

    # ----- OAuth token endpoint ----------------------------------------------
    def _token(self, req: Request) -> Response:
        self.token_requests += 1
        form = {k: v[0] for k, v in parse_qs(req.raw_body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return Response(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."})
        claims, problem = self._verify(form.get("assertion", ""), GOOGLE_TOKEN_AUDIENCE)
        if problem:
            return Response(400, {"error": "invalid_grant", "error_description": problem})
        token = "ya29." + secrets.token_urlsafe(24)
        self.tokens.add(token)
        return Response(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    def _verify(self, assertion: str, audience: str) -> tuple[dict, str | None]:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        try:
            head, payload, sig = assertion.split(".")
            header, claims = json.loads(_b64(head)), json.loads(_b64(payload))
        except ValueError:
            return {}, "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe."
        key = self.service_accounts.get(claims.get("iss"))
        if header.get("alg") != "RS256" or key is None:
            return claims, "Invalid grant: account not found"
        try:
            key.verify(_b64(sig), f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return claims, "Invalid JWT Signature."
        now = time.time()
        if claims.get("aud") != audience or not claims.get("scope") or \
                not (claims.get("iat", 0) - 300 <= now <= claims.get("exp", 0)) or claims["exp"] - claims["iat"] > 3600:
            return claims, "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe."
        return claims, None


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_A1 = re.compile(r"^(?:(?P<title>'(?:[^']|'')+'|[^!']+)!)?(?:(?P<c0>[A-Z]+)(?P<r0>\d+)?(?::(?P<c1>[A-Z]+)(?P<r1>\d+)?)?)?$")


def _parse_range(a1: str, book: dict) -> tuple[str, int, int, int | None, int | None] | None:
    """`Spend!A1:H`, `'Lead List'!A:F`, `Spend` (the whole sheet) -> (title, col0, row0, col1, row1)."""
    if "!" not in a1 and a1 in book:
        return a1, 1, 1, None, None
    m = _A1.match(a1)
    if not m or not m.group("title"):
        return None
    title = m.group("title")
    if title.startswith("'"):
        title = title[1:-1].replace("''", "'")
    if title not in book:
        return None
    c0 = _col_number(m.group("c0") or "A")
    c1 = _col_number(m.group("c1")) if m.group("c1") else (c0 if m.group("c0") else None)
    return title, c0, int(m.group("r0") or 1), c1, int(m.group("r1")) if m.group("r1") else None


def _col_number(name: str) -> int:
    n = 0
    for ch in name:
        n = n * 26 + ord(ch) - 64
    return n


def _col_name(n: int) -> str:
    out = ""
    while n:
        n, rem = divmod(n - 1, 26)
        out = chr(65 + rem) + out
    return out


def _quote(title: str) -> str:
    return title if re.fullmatch(r"[A-Za-z0-9_]+", title) else "'" + title.replace("'", "''") + "'"


def _trim(rows: list[list[Any]]) -> list[list[Any]]:
    """Trailing empty cells of each row and trailing empty rows are left out."""
    out = []
    for row in rows:
        while row and row[-1] in ("", None):
            row = row[:-1]
        out.append(row)
    while out and not out[-1]:
        out.pop()
    return out


def _render(cell: Any, render: str, dates: str) -> Any:
    c = cell if isinstance(cell, Cell) else Cell(cell)
    v = c.value
    if v is None or v == "":
        return ""
    if isinstance(v, (dt.date, dt.datetime)):
        if render == "FORMATTED_VALUE" or dates == "FORMATTED_STRING":
            return _date_text(v)
        return _serial(v)
    if isinstance(v, bool):
        return ("TRUE" if v else "FALSE") if render == "FORMATTED_VALUE" else v
    if isinstance(v, (int, float, Decimal)):
        if render != "FORMATTED_VALUE":
            return float(v) if isinstance(v, Decimal) else v
        return _number_text(Decimal(str(v)), c.fmt)
    return str(v)


def _number_text(d: Decimal, fmt: str | None) -> str:
    if fmt == "currency":
        text = f"${abs(d):,.2f}"
        return f"-{text}" if d < 0 else text
    if fmt == "number":
        return f"{d:,.0f}"
    if fmt == "percent":
        return f"{d * 100:.0f}%"
    return format(d.normalize(), "f") if d == d.to_integral_value() else str(d)


def _date_text(v: dt.date) -> str:
    if isinstance(v, dt.datetime):
        return f"{v.month}/{v.day}/{v.year} {v.hour}:{v.minute:02d}:{v.second:02d}"
    return f"{v.month}/{v.day}/{v.year}"


def _serial(v: dt.date) -> float:
    if isinstance(v, dt.datetime):
        days = (v.date() - EPOCH).days
        return days + (v.hour * 3600 + v.minute * 60 + v.second) / 86400
    return float((v - EPOCH).days)
