"""In-process fake of a JSON API that echoes requests back, the way many APIs' error bodies and
links do; it is what puts a credential into the text a sync runner logs and stores.

Modelled behaviour and where it comes from:

* The echo is httpbin's ``/anything`` document: ``args`` (the decoded query), ``headers`` (as
  received), ``method``, ``origin`` and ``url`` (the request URL as sent, percent-encoding and all):
  https://httpbin.org/anything (its README and https://httpbin.org/#/Anything). Here it is the body
  of an HTTP 400, after an ``error`` line, as an API that quotes the failed request answers.
* Records carry a ``self`` link that repeats the request URL, query string included (HAL's
  ``_links.self``; JSON:API ``links.self``: https://jsonapi.org/format/#document-links).
* Cursor pagination with an opaque ``next`` token that is base64 of the JSON state of the query it
  continues (its arguments included), as Google's ``pageToken`` and Microsoft Graph's
  ``$skiptoken`` are opaque encodings of request state.
* ``style=php`` answers as PHP's ``json_encode`` does by default: ``/`` written as ``\\/`` and
  every non-ASCII character as ``\\uXXXX`` (https://www.php.net/manual/en/json.constants.php:
  JSON_UNESCAPED_SLASHES, JSON_UNESCAPED_UNICODE are opt-outs); otherwise UTF-8 JSON.

Not modelled: any real vendor's auth rules. ``accept`` lists the credentials the fake takes (an
``api_key``/``token`` query value, a header value, or a basic-auth pair); anything else is a 401.
"""
from __future__ import annotations

import base64
import json

from .server import FakeAPI, Request, Response, route


class EchoAPI(FakeAPI):
    """``GET /items``: ``pages`` pages of two records (one with a bad email), then the next cursor's
    page answers HTTP 400 with the echo of the request."""

    def __init__(self, accept: list[tuple[str, str]], pages: int = 3):
        self.accept = accept  # (where, value): where is a query param name, a header name or "basic"
        self.pages = pages
        self.seen: list[dict] = []
        super().__init__()

    def routes(self):
        return [route("GET", "/items", self._items)]

    def is_authorized(self, req: Request) -> bool:
        basic = req.headers.get("authorization", "")
        for where, value in self.accept:
            if where == "basic" and basic == "Basic " + base64.b64encode(value.encode("latin-1")).decode():
                return True
            if req.arg(where) == value or req.headers.get(where.lower()) == value:
                return True
        return False

    def unauthorized(self, req: Request) -> Response:
        return self._echo(req, 401, "invalid credentials")

    def _items(self, req: Request) -> Response:
        self.seen.append({"args": dict(req.query), "headers": dict(req.headers)})
        cursor = req.arg("cursor")
        page = json.loads(base64.b64decode(cursor))["page"] if cursor else 1
        if page > self.pages:
            return self._echo(req, 400, "cursor expired")
        link = f"{req.base_url}{req.target}"
        records = [{"id": 2 * page - 1, "email": f"a{page}@example.com", "updated": f"2025-01-01T00:00:0{page}Z",
                    "self": link},
                   {"id": 2 * page, "email": "not-an-email", "updated": f"2025-01-01T00:00:0{page}Z", "self": link}]
        state = {"page": page + 1, "args": {k: v[0] for k, v in req.query.items() if k != "cursor"}}
        return self._encode(req, 200, {"data": records, "next": base64.b64encode(json.dumps(state).encode()).decode()})

    def _echo(self, req: Request, status: int, error: str) -> Response:
        doc = {"error": error, "headers": {k.title(): v for k, v in req.headers.items()},
               "url": f"{req.base_url}{req.target}", "args": {k: v[0] for k, v in req.query.items()},
               "method": req.method, "origin": "127.0.0.1"}
        return self._encode(req, status, doc)

    @staticmethod
    def _encode(req: Request, status: int, doc: dict) -> Response:
        if req.arg("style") == "php":
            text = json.dumps(doc, ensure_ascii=True).replace("/", "\\/")
        else:
            text = json.dumps(doc, ensure_ascii=False)
        return Response(status, text.encode("utf-8"))
