"""Pagination styles of the HTTP source (`source.pagination.type`), one small class each.

A paginator turns the call just made and its response into the next call, or None when the listing
is done. Each style answers two questions apart, as Airbyte's declarative CDK does: what the next
token is (its own `next_value`), and where it goes (a `Place`: a query parameter or a JSON body key,
shared by every style that sends a value). Every style also stops on an empty page, so a
misdescribed API ends instead of looping.

    none         one request
    cursor       a token from the body (`next`, jmespath) goes into `param`; or several tokens,
                 `next: {param: path, ...}`, each into its own parameter
    page         `param` = 1, 2, 3 ... until `total_pages` (jmespath), a false `more` flag, a page
                 shorter than `page_size`, or an empty page
    offset       `param` advances by the records received (or is `next_start` from the body), until
                 `total` (jmespath), a false `more` flag or an empty page
    next_url     follow the URL found at `next` in the body, unmodified
    link_header  follow the RFC 8288 `Link: <...>; rel="next"` header

A new style is a subclass with `type`, `from_options` and `next_call`, added to `STYLES`; one whose
next call can be guessed before the response is in also has `ahead`, which lets `concurrency`
fetch its pages ahead (pagepool.py).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Callable, ClassVar
from urllib.parse import urljoin, urlsplit

import jmespath
import requests

from syncrunner.sources.http.client import Call, HttpSourceError


def _path(expr: str | None) -> Callable[[Any], Any] | None:
    return jmespath.compile(expr).search if expr else None


@dataclass(frozen=True)
class Place:
    """Where a paging value goes: query parameter `param`, or key `param` of the JSON body."""

    param: str
    location: str  # query | json

    @classmethod
    def from_options(cls, o: dict, default_param: str, has_json_body: bool) -> "Place":
        return cls(o.get("param", default_param), o.get("in", "json" if has_json_body else "query"))

    def get(self, call: Call) -> Any:
        return (call.json or {}).get(self.param) if self.location == "json" else call.params.get(self.param)

    def put(self, call: Call, value: Any, page: int) -> Call:
        if self.location == "json":
            body = copy.deepcopy(call.json) if isinstance(call.json, dict) else {}
            body[self.param] = value
            return replace(call, json=body, page=page)
        return replace(call, params={**call.params, self.param: value}, page=page)


@dataclass
class Paginator:
    """One request, no next page (`type: none`); the base of every style."""

    type: ClassVar[str] = "none"

    @classmethod
    def from_options(cls, o: dict, base_url: str, has_json_body: bool) -> "Paginator":
        return cls()

    def first(self, call: Call) -> Call:
        """The first call of a listing (styles that count state their first value explicitly)."""
        return call

    def following(self, call: Call, resp: requests.Response, body: Any, n_records: int) -> Call | None:
        """The call for the next page, or None: the listing is done."""
        if n_records == 0:
            return None
        return self.next_call(call, resp, body, n_records)

    def next_call(self, call: Call, resp: requests.Response, body: Any, n_records: int) -> Call | None:
        return None

    def ahead(self, before: Call | None, call: Call) -> Call | None:
        """A guess of the call after `call` before its response is in (`before`: the call sent
        before it), for fetching pages ahead (pagepool.py); None: no guess. Only a guess: the next
        call sent is always `following`'s, a guess that differs is dropped."""
        return None


@dataclass
class CursorPaging(Paginator):
    """Tokens from the body, each into its own parameter: `next: path` with `param`, or
    `next: {param: path, ...}` for an API whose cursor is several values that only together name
    the next page (HighLevel: `startAfter` + `startAfterId`; the time alone skips the records that
    share its millisecond). Any token absent or empty ends the listing: a part of a cursor is
    never sent alone."""

    type: ClassVar[str] = "cursor"
    tokens: list[tuple[Place, Callable[[Any], Any]]]

    @classmethod
    def from_options(cls, o: dict, base_url: str, has_json_body: bool) -> "CursorPaging":
        nxt = o["next"]
        if isinstance(nxt, dict):
            return cls([(Place.from_options({**o, "param": param}, param, has_json_body), _path(path))
                        for param, path in nxt.items()])
        return cls([(Place.from_options(o, "after", has_json_body), _path(nxt))])

    def next_call(self, call: Call, resp: requests.Response, body: Any, n_records: int) -> Call | None:
        values = [(place, token(body)) for place, token in self.tokens]
        if any(value in (None, "") for _, value in values):
            return None
        for place, value in values:
            call = place.put(call, value, call.page)
        return replace(call, page=call.page + 1)


def _no_more(more: Callable[[Any], Any] | None, body: Any) -> bool:
    """The body's "more items" flag (`more`, jmespath) says the listing is done: absent or false.
    Without a `more` path nothing is said."""
    return more is not None and more(body) is not True


@dataclass
class PagePaging(Paginator):
    """Page numbers from `start`, until `total_pages`, a false `more` flag, a page shorter than
    `page_size`, or an empty page."""

    type: ClassVar[str] = "page"
    place: Place
    start: int
    total_pages: Callable[[Any], Any] | None
    more: Callable[[Any], Any] | None = None
    page_size: int | None = None  # a shorter page is the last (APIs that send no count)

    @classmethod
    def from_options(cls, o: dict, base_url: str, has_json_body: bool) -> "PagePaging":
        return cls(Place.from_options(o, "page", has_json_body), int(o.get("start", 1)),
                   _path(o.get("total_pages")), _path(o.get("more")),
                   int(o["page_size"]) if o.get("page_size") else None)

    def first(self, call: Call) -> Call:
        return self.place.put(call, self.start, call.page)

    def next_call(self, call: Call, resp: requests.Response, body: Any, n_records: int) -> Call | None:
        current = int(self.place.get(call))
        if self.page_size is not None and n_records < self.page_size:
            return None
        total = self.total_pages(body) if self.total_pages else None
        if _no_more(self.more, body) or (total is not None and current >= int(total)):
            return None
        return self.place.put(call, current + 1, call.page + 1)

    def ahead(self, before: Call | None, call: Call) -> Call | None:
        return self.place.put(call, int(self.place.get(call)) + 1, call.page + 1)


@dataclass
class OffsetPaging(Paginator):
    """Record offsets from `start`, advanced by the records received or taken from the body
    (`next_start`), until `total`, a false `more` flag, or an empty page."""

    type: ClassVar[str] = "offset"
    place: Place
    start: int
    total: Callable[[Any], Any] | None
    more: Callable[[Any], Any] | None = None
    next_start: Callable[[Any], Any] | None = None

    @classmethod
    def from_options(cls, o: dict, base_url: str, has_json_body: bool) -> "OffsetPaging":
        return cls(Place.from_options(o, "offset", has_json_body), int(o.get("start", 0)), _path(o.get("total")),
                   _path(o.get("more")), _path(o.get("next_start")))

    def first(self, call: Call) -> Call:
        return self.place.put(call, self.start, call.page)

    def next_call(self, call: Call, resp: requests.Response, body: Any, n_records: int) -> Call | None:
        if _no_more(self.more, body):
            return None
        given = self.next_start(body) if self.next_start else None
        nxt = int(given) if given is not None else int(self.place.get(call)) + n_records
        total = self.total(body) if self.total else None
        if total is not None and nxt >= int(total):
            return None
        return self.place.put(call, nxt, call.page + 1)

    def ahead(self, before: Call | None, call: Call) -> Call | None:
        """The same step as from `before` to `call` (the page size, on full pages)."""
        prev = self.place.get(before) if before is not None else None
        if prev is None:
            return None
        offset = int(self.place.get(call))
        step = offset - int(prev)
        return self.place.put(call, offset + step, call.page + 1) if step > 0 else None


@dataclass
class UrlPaging(Paginator):
    """Follows a next-page URL as given: its query already carries every parameter. Only a URL on
    another host is refused, since the credentials would go with it."""

    base_url: str

    def follow(self, call: Call, url: Any) -> Call | None:
        if not url:
            return None
        url = urljoin(call.url, str(url))
        if urlsplit(url).netloc != urlsplit(self.base_url).netloc:
            raise HttpSourceError(f"page {call.page} points to a next page on another host "
                                  f"({urlsplit(url).netloc}); refusing to send the credentials there")
        return replace(call, url=url, params={}, page=call.page + 1)


@dataclass
class NextUrlPaging(UrlPaging):
    """The next page's URL is at `next` (jmespath) in the body."""

    type: ClassVar[str] = "next_url"
    next: Callable[[Any], Any] | None = None

    @classmethod
    def from_options(cls, o: dict, base_url: str, has_json_body: bool) -> "NextUrlPaging":
        return cls(base_url, _path(o["next"]))

    def next_call(self, call: Call, resp: requests.Response, body: Any, n_records: int) -> Call | None:
        return self.follow(call, self.next(body))


@dataclass
class LinkHeaderPaging(UrlPaging):
    """The next page's URL is the RFC 8288 `Link: <...>; rel="next"` header."""

    type: ClassVar[str] = "link_header"

    @classmethod
    def from_options(cls, o: dict, base_url: str, has_json_body: bool) -> "LinkHeaderPaging":
        return cls(base_url)

    def next_call(self, call: Call, resp: requests.Response, body: Any, n_records: int) -> Call | None:
        return self.follow(call, resp.links.get("next", {}).get("url"))


STYLES: dict[str, type[Paginator]] = {
    cls.type: cls for cls in (Paginator, CursorPaging, PagePaging, OffsetPaging, NextUrlPaging, LinkHeaderPaging)}


def paginator(options: dict | None, base_url: str, has_json_body: bool) -> Paginator:
    """The paginator `source.pagination` describes (one request when absent)."""
    o = options or {"type": "none"}
    kind = o.get("type", "none")
    if kind not in STYLES:
        raise HttpSourceError(f"unknown pagination type {kind!r}")
    return STYLES[kind].from_options(o, base_url, has_json_body)
