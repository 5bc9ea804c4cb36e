"""An HTTP request described in a spec (`request:` or `tie_break:`): its path, params, headers and
JSON or XML body are sandboxed Jinja templates, compiled once and rendered per query. An XML body
(`xml:`, a SOAP envelope) escapes every value it prints and must render to well-formed XML. A template that is
exactly `{{ expression }}` keeps its value's type (a number stays a number, None leaves the part out)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from xml.etree.ElementTree import ParseError, fromstring
from typing import Any, Callable

from syncrunner.core.templating import compile_expression, compile_markup, compile_text


class RequestRenderError(ValueError):
    """A request template rendered to something that cannot be sent."""


Template = Callable[[dict], Any]
_SINGLE = re.compile(r"\{\{(.*)\}\}", re.S)


def compile_template(value: Any) -> Template:
    """A YAML value whose strings are Jinja templates -> a function of the template context."""
    if isinstance(value, str):
        if "{" not in value:
            return lambda ctx: value
        single = _SINGLE.fullmatch(value.strip())
        if single and "{{" not in single.group(1) and "}}" not in single.group(1):
            expr = compile_expression(single.group(1))  # keeps the value's type; None = leave out
            return lambda ctx: expr(**ctx)
        t = compile_text(value)
        return lambda ctx: t.render(**ctx)
    if isinstance(value, dict):
        parts = {k: compile_template(v) for k, v in value.items()}
        return lambda ctx: {k: f(ctx) for k, f in parts.items()}
    if isinstance(value, list):
        items = [compile_template(v) for v in value]
        return lambda ctx: [f(ctx) for f in items]
    return lambda ctx: value


def _param_text(value: Any) -> Any:
    return str(value).lower() if isinstance(value, bool) else value


@dataclass
class Rendered:
    """One request's parts, templates rendered."""

    method: str | None
    path: str | None
    params: dict
    headers: dict
    body: Any
    data: str | None = None  # an XML body, rendered

    def under(self, over: "Rendered") -> "Rendered":
        """These parts with `over`'s (a tie_break block) on top: params, headers and the keys of a
        JSON object body are replaced one by one, so a tie_break names only what it changes."""
        body = over.body if over.body is not None else self.body
        if isinstance(self.body, dict) and isinstance(over.body, dict):
            body = {**self.body, **over.body}
        return Rendered(over.method or self.method, over.path or self.path, {**self.params, **over.params},
                        {**self.headers, **over.headers}, body, over.data or self.data)


class RequestTemplate:
    """A `request` (or `tie_break`) mapping compiled once, rendered per query."""

    def __init__(self, req: dict, name: str, what: str = "request"):
        self.name, self.what = name, what
        self.method = str(req["method"]).upper() if req.get("method") else None
        self.path = compile_template(req["path"]) if req.get("path") else None
        self.params = compile_template(req.get("params") or {})
        self.headers = compile_template(req.get("headers") or {})
        self.json_text = isinstance(req.get("json"), str)
        self.body = compile_template(req["json"]) if req.get("json") is not None else None
        self.xml = compile_markup(req["xml"]) if req.get("xml") else None

    def render(self, ctx: dict) -> Rendered:
        params = {k: _param_text(v) for k, v in self.params(ctx).items() if v not in (None, "")}
        headers = {k: str(v) for k, v in self.headers(ctx).items() if v not in (None, "")}
        body = self.body(ctx) if self.body is not None else None
        if self.json_text:
            try:
                body = json.loads(body)
            except ValueError as e:
                raise RequestRenderError(f"{self.name}: {self.what}.json did not render to valid JSON "
                                      f"({e}):\n{body}") from None
        data = self._xml(ctx) if self.xml is not None else None
        return Rendered(self.method, str(self.path(ctx)) if self.path else None, params, headers, body, data)

    def _xml(self, ctx: dict) -> str:
        data = self.xml.render(**ctx).strip()
        if "<!DOCTYPE" in data.upper():
            raise RequestRenderError(f"{self.name}: {self.what}.xml must not have a <!DOCTYPE>")
        try:
            fromstring(data.encode("utf-8"))
        except ParseError as e:
            raise RequestRenderError(f"{self.name}: {self.what}.xml did not render to well-formed XML "
                                     f"({e}):\n{data}") from None
        return data


def context(since: Any, until: Any, since_exclusive: bool = False, tie_value: Any = None,
            after_key: Any = None, start_date: Any = None, end_date: Any = None,
            params: dict | None = None, parent: dict | None = None) -> dict:
    """What request templates see. `start_date` / `end_date`: the run's --start-date / --end-date
    when the cursor is an id (Window.start / end), for an API's creation-time filter. `params`: the
    run's parameters (`params.NAME`); `parent`: under `for_each`, the current parent's fields."""
    bounded = any(v is not None for v in (since, until, start_date, end_date))
    return {"since": since, "until": until, "window": bounded, "since_exclusive": since_exclusive,
            "tie_value": tie_value, "after_key": after_key, "start_date": start_date, "end_date": end_date,
            "params": params or {}, "parent": parent}


def dates(window: Any) -> dict:
    """A window's id-cursor dates as context() keywords."""
    return {"start_date": window.start, "end_date": window.end}
