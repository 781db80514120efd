"""`meshctl trace ID --html`: the page for a recorded trace (Jaeger's /api/v3/traces answer for one order, from a
running mesh: tests/unit/fixtures/jaeger_order_trace.json) with hostile text added to it, read as text and as
headless Chromium shows it after the page's script ran."""

from __future__ import annotations

import copy
import json
import pathlib
import re
from html.parser import HTMLParser

import pytest

from mesh.ctl.trace import Span, ordered, render, spans_of
from mesh.ctl.trace_html import page
from support import chromium

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "jaeger_order_trace.json"
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"


def _answer() -> dict:
    answer = copy.deepcopy(json.loads(FIXTURE.read_text()))
    resource_spans = answer["result"]["resourceSpans"]
    first = resource_spans[0]["scopeSpans"][0]["spans"][0]
    first.setdefault("attributes", []).append({"key": "note", "value": {"stringValue": HOSTILE}})
    first["attributes"].append({"key": "<b>key</b>", "value": {"stringValue": "\" onmouseover=\"alert(2)"}})
    return answer


@pytest.fixture(scope="module")
def spans() -> list[Span]:
    return spans_of(_answer()["result"])


@pytest.fixture(scope="module")
def html(spans: list[Span]) -> str:
    return page(spans, spans[0].trace_id)


def _rows(text: str) -> list[tuple[str, str]]:
    """(class, span id) of every span row, in document order."""
    return re.findall(r'<tr class="(span[^"]*)" data-id="([^"]+)"', text)


def test_the_fixture_is_a_whole_order(spans: list[Span]) -> None:
    assert {s.service for s in spans} == {"gateway", "orders", "catalog", "pricing", "inventory", "payments"}
    assert len({s.trace_id for s in spans}) == 1


def test_every_span_once_in_the_terminals_order(spans: list[Span], html: str) -> None:
    ids = [span_id for _, span_id in _rows(html)]
    assert ids == [s.span_id for _, s, _ in ordered(spans)]
    assert sorted(ids) == sorted(s.span_id for s in spans) and len(set(ids)) == len(ids)
    terminal = [line for line in render(spans, 200).splitlines()[1:] if line.lstrip().startswith(("·", "✗"))]
    assert len(terminal) == len(ids)
    for line, (_, s, _attempt) in zip(terminal, ordered(spans), strict=True):
        assert f"{s.service}[" in line and s.name in line


def test_hostile_text_is_escaped(html: str) -> None:
    assert "<script>document" not in html and "<img" not in html and "<b>key" not in html
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&quot; onmouseover=&quot;alert(2)" in html
    assert html.count("<script>") == 1  # the page's own


def test_no_external_urls(html: str) -> None:
    class Attributes(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.found: list[tuple[str, str, str]] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.found += [(tag, name, value or "") for name, value in attrs]
    parser = Attributes()
    parser.feed(html)
    assert parser.found and not [a for a in parser.found if a[1] in ("src", "href", "action") or "http" in a[2]]
    for fetch in ("<link", "@import", "url(", "<iframe", "fetch(", "XMLHttpRequest"):
        assert fetch not in html, fetch


def test_retries_and_errors_are_marked() -> None:
    spans = [Span("r", "", "gateway", "python", "GET /x", "server", 0, 10, ""),
             Span("a", "r", "gateway", "python", "CatalogService/GetProduct", "client", 1, 3, "UNAVAILABLE: <down>"),
             Span("b", "r", "gateway", "python", "CatalogService/GetProduct", "client", 4, 6, "")]
    text = page(spans, "t")
    assert '<span class="retry">#2</span>' in text and text.count('class="retry"') == 1
    assert 'class="span error"' in text and "error: UNAVAILABLE: &lt;down&gt;" in text
    assert "(no spans)" in page([], "t")


def test_chromium_shows_the_spans_and_the_toggles(spans: list[Span], html: str, tmp_path: pathlib.Path) -> None:
    chromium.require()
    file = tmp_path / "trace.html"
    file.write_text(html)
    dom = chromium.dump_dom(file)
    assert 'data-ready="true"' in dom  # the script ran
    assert re.search(r"<title>trace [0-9a-f]{32}</title>", dom)  # the hostile script did not
    rows = _rows(dom)
    assert [i for _, i in rows] == [s.span_id for _, s, _ in ordered(spans)]
    assert not any("hidden" in cls for cls, _ in rows)
    parents = {s.parent_id for s in spans}
    toggles = re.findall(r'<tr class="span[^"]*" data-id="([^"]+)"[^>]*>.*?</tr>', dom, re.S)
    with_toggle = {i for i in toggles if re.search(
        rf'data-id="{i}"[^>]*>(?:(?!</tr>).)*<button class="toggle" aria-expanded="true"', dom, re.S)}
    assert with_toggle == {s.span_id for s in spans if s.span_id in parents}
    for s in spans:
        assert f'data-service="{s.service}"' in dom

    folded = chromium.dump_dom(file, "collapse=all")
    roots = {s.span_id for s in spans if s.parent_id not in {x.span_id for x in spans}}
    visible = {i for cls, i in _rows(folded) if "hidden" not in cls}
    assert visible == roots and 'aria-expanded="false"' in folded

    first = spans_of(_answer()["result"])[0].span_id
    expanded = chromium.dump_dom(file, f"expand={first}")
    shown = re.search(rf'<tr class="attrs( hidden)?" id="attrs-{first}">(.*?)</tr>', expanded, re.S)
    assert shown and not shown.group(1) and "&lt;script&gt;document.title" in shown.group(2)
    assert len(re.findall(r'<tr class="attrs" ', expanded)) == 1
