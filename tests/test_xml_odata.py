"""The spec-language pieces of issue 25's Five9 and MarketSharp parts, one by one: XML records and
faults, the XML body template, the OData datetime literal, Microsoft JSON dates, the HMAC header,
and the lint checks of an XML source."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac

import pytest

from syncrunner.core.coerce import coercer
from syncrunner.core.requests import RequestRenderError, RequestTemplate, context
from syncrunner.core.templatecheck import TemplateRefused
from syncrunner.sources.http.auth import Auth
from syncrunner.sources.http.xmlresponse import XmlRecords, XmlRefused, parse, soap_fault
from syncrunner.spec.lint import xml_problems

UTC = dt.timezone.utc
NS = {"a": "urn:a"}


def test_records_by_child_elements_by_fields_and_by_names_and_values():
    root = parse(b'<r xmlns="urn:a" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><list>'
                 b'<item><Id>1</Id><Name>Ann</Name><Note xsi:nil="true"/><Addr><City>Dallas</City></Addr>'
                 b'<Tag>x</Tag><Tag>y</Tag></item><item><Id>2</Id><Name/></item></list></r>')
    plain = XmlRecords("a:list/a:item", NS).read(root)
    assert plain == [{"Id": "1", "Name": "Ann", "Note": None, "Addr": {"City": "Dallas"}, "Tag": ["x", "y"]},
                     {"Id": "2", "Name": ""}]
    by_field = XmlRecords("a:list/a:item", NS, fields={"id": "a:Id", "city": "a:Addr/a:City"}).read(root)
    assert by_field == [{"id": "1", "city": "Dallas"}, {"id": "2", "city": None}]
    zipped = parse(b"<r><f>id</f><f>name</f><rec><v><d>7</d><d/></v></rec><rec><v><d>8</d><d>Bo</d></v></rec></r>")
    assert XmlRecords("rec", names="f", values="v/d").read(zipped) == [{"id": "7", "name": ""},
                                                                      {"id": "8", "name": "Bo"}]
    with pytest.raises(XmlRefused, match="record 1 has 1 values for 2 field names"):
        XmlRecords("rec", names="f", values="v/d").read(parse(b"<r><f>id</f><f>n</f><rec><v><d>7</d></v></rec></r>"))
    with pytest.raises(XmlRefused, match="no element at 'a:nothing'"):
        XmlRecords("a:nothing/a:item", NS).read(root)
    assert XmlRecords("a:list/a:none", NS).read(root) == []  # the list is there, empty


def test_soap_11_and_12_faults_on_one_line():
    f11 = parse(b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><e:Fault>'
                b"<faultcode>e:Client</faultcode><faultstring>bad\n   criteria</faultstring></e:Fault></e:Body></e:Envelope>")
    assert soap_fault(f11) == "e:Client: bad criteria"
    f12 = parse(b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><e:Fault><e:Code>'
                b'<e:Value>e:Sender</e:Value></e:Code><e:Reason><e:Text xml:lang="en">No access</e:Text>'
                b"</e:Reason></e:Fault></e:Body></e:Envelope>")
    assert soap_fault(f12) == "e:Sender: No access"
    assert soap_fault(parse(b"<e:Envelope xmlns:e='urn:x'><e:Body><ok/></e:Body></e:Envelope>")) is None


def test_a_dtd_is_refused_before_anything_is_declared_and_malformed_xml_is_named():
    with pytest.raises(XmlRefused, match=r"document type declaration <!DOCTYPE r> \(external 'file:///etc/passwd'\)"):
        parse(b'<!DOCTYPE r SYSTEM "file:///etc/passwd"><r/>')
    with pytest.raises(XmlRefused, match="not well-formed"):
        parse(b"<r><a></r>")


def test_the_xml_body_escapes_values_and_must_be_well_formed():
    t = RequestTemplate({"method": "POST", "path": "/x", "xml": "<q><v>{{ since | iso }}</v><w>{{ '<a & \"b\">' }}</w></q>"}, "t")
    body = t.render(context(dt.datetime(2024, 1, 2, tzinfo=UTC), None)).data
    assert body == "<q><v>2024-01-02T00:00:00+00:00</v><w>&lt;a &amp; &#34;b&#34;&gt;</w></q>"
    with pytest.raises(RequestRenderError, match="did not render to well-formed XML"):
        RequestTemplate({"path": "/x", "xml": "<q>{% if window %}<v>{% endif %}</q>"}, "t").render(context(dt.datetime(2024, 1, 2, tzinfo=UTC), None))
    with pytest.raises(TemplateRefused):
        RequestTemplate({"path": "/x", "xml": "<q>{{ since.__class__ }}</q>"}, "t")


def test_odata_datetime_literal_and_microsoft_json_dates():
    from syncrunner.core.templatevocab import odata_datetime
    assert odata_datetime(dt.datetime(2024, 1, 1, tzinfo=UTC)) == "datetime'2024-01-01T00:00:00'"
    local = dt.datetime(2024, 1, 1, 1, 0, 0, 250000, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert odata_datetime(local) == "datetime'2024-01-01T00:00:00.250'"
    assert odata_datetime(None) is None
    to_dt = coercer("datetime", tz="America/New_York")
    instant = dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert to_dt("/Date(1700000000000)/") == to_dt("/Date(1700000000000+0100)/") == instant
    assert to_dt("/Date(1700000000000-0400)/") == instant
    assert to_dt("/Date(-86400000)/") == dt.datetime(1969, 12, 31, tzinfo=UTC)
    with pytest.raises(ValueError):
        to_dt("/Date(soon)/")


def test_hmac_header_is_signed_per_request_as_marketsharp_documents():
    secret = base64.b64encode(b"k" * 32).decode()
    auth = Auth.from_options({"type": "hmac", "secret": secret, "secret_encoding": "base64",
                              "message": "1239KEY{epoch}", "value": "1239:KEY:{epoch}:{signature}"})
    expected = base64.b64encode(hmac.new(b"k" * 32, b"1239KEY1700000000", hashlib.sha256).digest()).decode()
    assert auth.signer.sign(1700000000) == f"1239:KEY:1700000000:{expected}"


@pytest.mark.parametrize("source, where, message", [
    ({"records": "x:Body/y:z", "xml": {"namespaces": {"x": "urn:x"}}}, ("records",), "prefix 'y' not found"),
    ({"records": "a", "xml": {"names": "q:f", "values": "v"}}, ("xml", "names"), "prefix 'q' not found"),
    ({"records": "a", "pagination": {"type": "next_url", "next": "n"}}, ("pagination",), "cannot be read by a jmespath"),
])
def test_lint_checks_xml_paths_and_paging(source, where, message):
    problems = xml_problems({"format": "xml", **source})
    assert [p for p in problems if p[0] == where and message in p[1]], problems
