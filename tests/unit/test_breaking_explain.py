"""`make breaking`'s words (tools/proto/breaking.py) on buf's own JSON: tests/unit/fixtures/buf_breaking/findings.jsonl
is what buf 1.75.0 printed for `buf breaking protos --against '.git#branch=main,subdir=protos' --error-format json`
after main/demo.proto and main/gone.proto (committed on main, in protos/shop/demo/v1/) became edited/demo.proto and
gone.proto was deleted; tests/contracts/test_breaking.py checks that buf still prints exactly that."""

from __future__ import annotations

import importlib.util
import pathlib
import string
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "buf_breaking" / "findings.jsonl"


def _load():
    spec = importlib.util.spec_from_file_location("breaking", ROOT / "tools" / "proto" / "breaking.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


breaking = _load()


@pytest.fixture(scope="module")
def findings():
    return breaking.parse(FIXTURE.read_text())


def test_the_parser_reads_every_line_with_its_place(findings):
    assert len(findings) == len(FIXTURE.read_text().splitlines()) == 35
    deleted_file = findings[0]
    assert (deleted_file.rule, deleted_file.where) == ("FILE_NO_DELETE", "protos/shop/demo/v1/gone.proto:1")
    type_change = next(f for f in findings if f.rule == "RPC_SAME_REQUEST_TYPE")
    assert type_change.where == "protos/shop/demo/v1/demo.proto:9"
    assert type_change.message.startswith('RPC "Get" on service "DemoService" changed request type')


def test_every_rule_of_the_recording_has_its_own_words(findings):
    unexplained = sorted({f.rule for f in findings if f.rule not in breaking.EXPLANATIONS})
    assert not unexplained


def test_every_placeholder_is_filled_from_the_finding(findings):
    """A fact the words need but buf's message did not give would read as a generic phrase: none here."""
    for finding in findings:
        facts = breaking._facts(finding, "protos")
        words = breaking._words(finding.rule, facts)
        needed = {name for text in (words.what, words.fix) for _, name, _, _ in string.Formatter().parse(text) if name}
        missing = needed - facts.keys()
        assert not missing, f"{finding.rule}: {finding.message} lacks {missing}"


@pytest.mark.parametrize(("rule", "said"), [
    ("RPC_SAME_REQUEST_TYPE", [("The request of DemoService.Get changed from shop.demo.v1.GetRequest to "
                                "shop.demo.v1.Other"), "keep Get as it is and add a new RPC", "shop.demo.v2"]),
    ("ENUM_VALUE_SAME_NAME", ["Value 1 of enum Color renamed from COLOR_RED to COLOR_CRIMSON",
                              "`option allow_alias = true;` and `COLOR_CRIMSON = 1;`"]),
    ("RESERVED_MESSAGE_NO_DELETE", ["A reservation of GetRequest was removed (name \"old\")"]),
    ("FILE_NO_DELETE", ["The file protos/shop/demo/v1/gone.proto was deleted"]),
    ("FIELD_SAME_JSTYPE", ["Field 3 (big) of GetRequest changed jstype from JS_STRING to JS_NORMAL"]),
])
def test_the_words_name_what_changed(findings, rule, said):
    finding = next(f for f in findings if f.rule == rule)
    text = " ".join(breaking.explain(finding))
    for words in said:
        assert words in text


def test_cardinality_says_repeated_or_presence(findings):
    cardinality = [f for f in findings if f.rule == "FIELD_SAME_CARDINALITY"]
    to_repeated = next(f for f in cardinality if f.where.endswith(":22"))
    presence = next(f for f in cardinality if f.where.endswith(":24"))
    assert "keeps only the last" in breaking.explain(to_repeated)[0]
    assert "`optional` added or removed" in breaking.explain(presence)[0]


def test_an_unknown_rule_still_shows_buf_s_message():
    finding = breaking.Finding("protos/shop/catalog/v1/catalog.proto", 7, "FIELD_SAME_SOMETHING_NEW",
                               'Field "1" with name "id" on message "Product" changed something.')
    text = breaking.render([finding])
    assert "protos/shop/catalog/v1/catalog.proto:7: FIELD_SAME_SOMETHING_NEW" in text
    assert 'buf:    Field "1" with name "id" on message "Product" changed something.' in text
    flowing = " ".join(text.split())  # the paragraphs are wrapped
    assert "rule FIELD_SAME_SOMETHING_NEW has no plain-words text here yet" in flowing and "shop.catalog.v2" in flowing
    assert "{" not in text and text.endswith("1 breaking change against main")


def test_render_lists_each_finding_then_a_count(findings):
    text = breaking.render(findings)
    assert text.count("\n  buf:    ") == text.count("\n  breaks: ") == text.count("\n  fix:    ") == 35
    assert "{" not in text and "}" not in text
    assert text.endswith("35 breaking changes against main")
    assert all(len(line) <= breaking.WIDTH for line in text.splitlines() if not line.startswith("protos/"))


def test_a_compile_error_is_no_breaking_change():
    """The line buf printed for a line of garbage at the end of catalog.proto."""
    text = breaking.render(breaking.parse(
        '{"path":"protos/shop/catalog/v1/catalog.proto","start_line":67,"start_column":1,"end_line":67,'
        '"end_column":13,"type":"COMPILE","message":"missing message field tag in declaration"}\n'))
    assert "protos/shop/catalog/v1/catalog.proto:67: COMPILE" in text
    assert text.endswith("protos/ does not compile: fix it, then run make breaking again")


@pytest.mark.parametrize(("package", "next_one"), [
    ("shop.catalog.v1", "shop.catalog.v2"), ("shop.catalog.v9", "shop.catalog.v10"),
    ("shop.catalog.v1beta1", "shop.catalog.v2"), ("shop.catalog", "shop.catalog.v2"),
])
def test_the_next_version_package(package, next_one):
    assert breaking._next_version(package) == next_one
