"""XML responses of the HTTP source (`format: xml`, SOAP services such as Five9's): parsed safely,
records picked out by ElementPath with namespace prefixes, SOAP faults turned into one line.

Safety. A response is untrusted input. Any document type declaration (`<!DOCTYPE ...>`) is refused
when the parser reaches it, before its internal subset is read: without a DTD no entity can be
declared, so no external entity can make the parser read a local file or a URL, and no entity can
expand without bound ("billion laughs"). SOAP forbids a DTD in a message anyway (SOAP 1.1, section 3:
"A SOAP message MUST NOT contain a Document Type Declaration"). This is the standard library's
expat parser (xml.etree); it would not fetch an external entity on its own either (it answers
"undefined entity"), but it expands internal ones, which is why the DTD is refused outright. The
check is the parser's own doctype event, not a text search, so no spelling gets past it. defusedxml
would do the same (refuse DTDs and entity declarations) and is therefore not needed.

Records (`xml:` in the spec), paths relative to the document's root element, `ns:` prefixes from
`namespaces`:

    records  the elements that are one record each
    names    (optional) elements whose texts are the field names, in order, for responses that
             send a header of names and rows of values (Five9 getContactRecords: `return/fields`
             then `return/records/values/data`): each record's `values` elements are zipped with them
    values   the value elements under one record, with `names`
    fields   (optional) field name -> path under one record, for records with named children
Without names or fields, a record is its child elements by local name (nested elements as objects).
An element with `xsi:nil="true"` (or OData's `m:null="true"`) is null; an empty one is ""."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Callable


class XmlRefused(ValueError):
    """A response the source will not parse (a DTD) or cannot read as XML."""


class DtdRefused(XmlRefused):
    """A document type declaration: never retried."""


class _NoDtd(ET.TreeBuilder):
    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        where = f" (external {system!r})" if system else ""
        raise DtdRefused(f"the XML has a document type declaration <!DOCTYPE {name}>{where}: refused, since "
                         f"its entities could read local files or expand without bound; nothing was read")


def parse(content: bytes) -> ET.Element:
    """The root element of an XML document; raises XmlRefused for a DTD or malformed XML."""
    parser = ET.XMLParser(target=_NoDtd())
    try:
        parser.feed(content)
        return parser.close()
    except XmlRefused:
        raise
    except ET.ParseError as e:
        raise XmlRefused(f"the response is not well-formed XML ({e})") from None


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _is_null(el: ET.Element) -> bool:
    return any(local(k) in ("nil", "null") and v == "true" for k, v in el.attrib.items())


def value_of(el: ET.Element) -> Any:
    """An element as a plain value: null, its text, or (with children) an object by local name;
    a child name that repeats becomes a list."""
    if _is_null(el):
        return None
    if len(el) == 0:
        return el.text or ""
    out: dict[str, Any] = {}
    for child in el:
        name, v = local(child.tag), value_of(child)
        if name in out:
            out[name] = out[name] if isinstance(out[name], list) else [out[name]]
            out[name].append(v)
        else:
            out[name] = v
    return out


@dataclass
class XmlRecords:
    """Where the records are in a response (the spec's `records` and `xml:` options)."""

    records: str
    namespaces: dict[str, str] = field(default_factory=dict)
    names: str | None = None
    values: str | None = None
    fields: dict[str, str] | None = None

    @classmethod
    def from_options(cls, records: str, options: dict | None) -> "XmlRecords":
        o = options or {}
        return cls(records, dict(o.get("namespaces") or {}), o.get("names"), o.get("values"), o.get("fields"))

    @property
    def expr(self) -> str:
        return self.records

    def read(self, root: ET.Element) -> list[dict]:
        """The records of one response; raises XmlRefused naming the record that does not fit."""
        elements = root.findall(self.records, self.namespaces)
        if not elements and root.find(self._parent(), self.namespaces) is None:
            raise XmlRefused(f"no element at '{self._parent()}' (root <{local(root.tag)}>)")
        if self.names:
            names = [e.text or "" for e in root.findall(self.names, self.namespaces)]
            return [self._zipped(names, el, i) for i, el in enumerate(elements, 1)]
        if self.fields:
            return [{name: self._field(el, path) for name, path in self.fields.items()} for el in elements]
        return [value_of(el) if len(el) else {} for el in elements]

    def _parent(self) -> str:
        head = self.records.rsplit("/", 1)[0] if "/" in self.records else "."
        return head or "."

    def _zipped(self, names: list[str], el: ET.Element, n: int) -> dict:
        values = el.findall(self.values or "*", self.namespaces)
        if len(values) != len(names):
            raise XmlRefused(f"record {n} has {len(values)} values for {len(names)} field names "
                             f"({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})")
        return {name: (None if _is_null(v) else v.text or "") for name, v in zip(names, values)}

    def _field(self, el: ET.Element, path: str) -> Any:
        found = el.find(path, self.namespaces)
        return None if found is None else value_of(found)


def soap_fault(root: ET.Element) -> str | None:
    """`faultcode: faultstring` of a SOAP 1.1 fault (or Code/Reason of SOAP 1.2), on one line;
    None when the document is not a fault."""
    body = next((c for c in root if local(c.tag) == "Body"), None) if local(root.tag) == "Envelope" else None
    fault = next((c for c in body if local(c.tag) == "Fault"), None) if body is not None else None
    if fault is None:
        return None
    parts = {local(c.tag): c for c in fault}
    if "faultstring" in parts:
        code, text = parts.get("faultcode"), parts["faultstring"].text
    else:  # SOAP 1.2: Code/Value, Reason/Text
        code = parts["Code"].find("{*}Value") if "Code" in parts else None
        text = " ".join(t.text or "" for t in parts["Reason"].findall("{*}Text")) if "Reason" in parts else ""
    code_text = (code.text or "").strip() if code is not None else ""
    message = " ".join((text or "").split()) or "(no fault string)"
    return f"{code_text}: {message}" if code_text else message


def explain(resp: Any) -> str | None:
    """A `requests` response's SOAP fault as one line (`SOAP fault <code>: <string>`), or None."""
    try:
        fault = soap_fault(parse(resp.content))
    except XmlRefused:
        return None
    return None if fault is None else f"SOAP fault {fault}"


class _Malformed(ValueError):
    """Not well-formed XML: a transient fault (a body cut off), retried by the client."""


def decoder(fatal: Callable[[Exception], Exception]) -> Callable[[Any], ET.Element]:
    """The client's decoder for a successful XML response: its root element. Malformed XML raises
    ValueError (retried like a cut-off JSON body); a DTD or a SOAP fault raises fatal(e) at once."""
    def decode(resp: Any) -> ET.Element:
        try:
            root = parse(resp.content)
        except DtdRefused as e:
            raise fatal(e) from None
        except XmlRefused as e:
            raise _Malformed(str(e)) from None
        fault = soap_fault(root)
        if fault is not None:
            raise fatal(XmlRefused(f"SOAP fault {fault} (not retried)"))
        return root
    decode.what = "XML"  # type: ignore[attr-defined]
    return decode
