"""Pagination styles of the HTTP source (`source.pagination.type`). Each one turns the call just made
and its response into the next call, or None when the listing is done. Every style also stops on an
empty page, so a misdescribed API ends instead of looping.

    none         one request
    cursor       a token from the body (`next`, jmespath) goes into `param` (query or JSON body)
    page         `param` = 1, 2, 3 ... until `total_pages` (jmespath) or an empty page
    offset       `param` advances by the records received, until `total` (jmespath) or an empty page
    next_url     follow the URL found at `next` in the body, unmodified
    link_header  follow the RFC 8288 `Link: <...>; rel="next"` header
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Callable
from urllib.parse import urljoin, urlsplit

import jmespath
import requests

from syncrunner.sources.http.client import Call, HttpSourceError


def _path(expr: str | None) -> Callable[[Any], Any] | None:
    return jmespath.compile(expr).search if expr else None


@dataclass
class Paginator:
    type: str
    param: str | None
    location: str                         # query | json: where `param` goes
    next: Callable[[Any], Any] | None     # cursor token / next URL
    total: Callable[[Any], Any] | None    # total_pages (page) or total records (offset)
    start: int
    base_url: str

    @classmethod
    def from_options(cls, options: dict | None, base_url: str, has_json_body: bool) -> "Paginator":
        o = options or {"type": "none"}
        kind = o.get("type", "none")
        default_param = {"cursor": "after", "page": "page", "offset": "offset"}.get(kind)
        total = o.get("total_pages") if kind == "page" else o.get("total") if kind == "offset" else None
        return cls(kind, o.get("param", default_param), o.get("in", "json" if has_json_body else "query"),
                   _path(o.get("next")), _path(total), int(o.get("start", 1 if kind == "page" else 0)),
                   base_url)

    def first(self, call: Call) -> Call:
        """Page and offset styles state their first value explicitly."""
        if self.type in ("page", "offset"):
            return self._with(call, self.start, call.page)
        return call

    def following(self, call: Call, resp: requests.Response, body: Any, n_records: int) -> Call | None:
        """The call for the next page, or None."""
        if self.type == "none" or n_records == 0:
            return None
        page = call.page + 1
        if self.type == "cursor":
            token = self.next(body)
            return None if token in (None, "") else self._with(call, token, page)
        if self.type in ("page", "offset"):
            current = int(self._current(call))
            total = self.total(body) if self.total else None
            if self.type == "page":
                done, nxt = total is not None and current >= int(total), current + 1
            else:
                nxt = current + n_records
                done = total is not None and nxt >= int(total)
            return None if done else self._with(call, nxt, page)
        if self.type == "next_url":
            url = self.next(body)
            return None if not url else self._follow(call, str(url), page)
        if self.type == "link_header":
            url = resp.links.get("next", {}).get("url")
            return None if not url else self._follow(call, url, page)
        raise HttpSourceError(f"unknown pagination type {self.type!r}")

    def _current(self, call: Call) -> Any:
        return call.json.get(self.param) if self.location == "json" else call.params.get(self.param)

    def _with(self, call: Call, value: Any, page: int) -> Call:
        if self.location == "json":
            body = copy.deepcopy(call.json) if isinstance(call.json, dict) else {}
            body[self.param] = value
            return replace(call, json=body, page=page)
        return replace(call, params={**call.params, self.param: value}, page=page)

    def _follow(self, call: Call, url: str, page: int) -> Call:
        """Next URLs are used as given (their query already carries every parameter); only a URL on
        another host is refused, since the credentials would go with it."""
        url = urljoin(call.url, url)
        if urlsplit(url).netloc != urlsplit(self.base_url).netloc:
            raise HttpSourceError(f"page {call.page} points to a next page on another host "
                                  f"({urlsplit(url).netloc}); refusing to send the credentials there")
        return replace(call, url=url, params={}, page=page)
