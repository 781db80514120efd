"""`make breaking`: buf's breaking check of protos/ against the `main` branch, each finding explained.

buf says what changed ("Previously present field "3" ... was deleted."); this says, per finding, what
peers built from main will see when they talk to code built from this change, and the usual way to
make the change without breaking them (a new field number, `deprecated = true`, a new version
package served beside the old one). Run from the repository root:

    python tools/proto/breaking.py            # what `make breaking` runs

Exit 0 when nothing breaks (or when there is no `main` branch to compare with: a fresh clone of
another branch, a tarball), 1 when something does, buf's own exit code when buf itself fails.
The comparison is the working tree (committed or not) against main's last commit, so it also
works on main itself with uncommitted edits.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EXPLANATIONS", "Explanation", "Finding", "explain", "main", "parse", "render"]

BUF = Path(__file__).resolve().parent / "node_modules" / ".bin" / "buf"
MODULE = "protos"  # our contracts; vendored third_party/ modules follow their upstreams
BRANCH = "main"
BUF_FINDINGS = 100  # buf's exit code when it printed findings (breaking changes or compile errors)
WIDTH = 100


@dataclass(frozen=True)
class Finding:
    """One line of `buf breaking --error-format json`."""

    path: str  # relative to the directory buf ran in; FILE_NO_DELETE has none (the file is gone)
    line: int
    rule: str  # buf's rule id, e.g. FIELD_NO_DELETE; COMPILE when protos/ does not compile
    message: str  # buf's own sentence

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Explanation:
    what: str  # what peers built from main see, in plain words
    fix: str  # the usual way to make this change without breaking them


def parse(lines: str, module: str = MODULE) -> list[Finding]:
    """buf's JSON lines, in buf's order."""
    findings = []
    for text in lines.splitlines():
        if not text.strip():
            continue
        item = json.loads(text)
        path = item.get("path")
        if not path:  # a deleted file: buf names it, relative to the module, in the message only
            gone = re.search(r'file "([^"]+)"', item.get("message", ""))
            path = f"{module}/{gone.group(1)}" if gone else module
        findings.append(Finding(path=path, line=int(item.get("start_line") or 1), rule=item.get("type", "?"),
                                message=item.get("message", "")))
    return findings


# --- the words ------------------------------------------------------------------------------------
# {placeholders} are filled from buf's message and the file's path (_facts); one a finding lacks reads
# as a generic phrase (_Facts.__missing__), so a new wording of buf's never breaks the output.

_KEEP_DEPRECATED = ("Keep it, marked `option deprecated = true;`, until no caller uses it (the mesh's traces and "
                    "logs show who calls what); remove it only in a new version package, {next_package}, served "
                    "beside {package} until every caller has moved.")
_NEW_FIELD = ("Leave field {number} as it was and mark it `[deprecated = true]`; add the new shape as a NEW field "
              "with the next free number in {message}, and fill both until every caller reads the new one. When "
              "the old one finally goes: `reserved {number}; reserved \"{name}\";` so that nobody reuses them.")


def _new_rpc(lead: str) -> str:
    return (f"{lead} {{rpc}} as it is and add a new RPC with the new shape (its own request and response "
            "messages); mark {rpc} `option deprecated = true;` and serve both until no caller is left. Or make "
            "the change in {next_package}, served beside {package}.")


_LANGUAGE_OPTION = Explanation(
    what=("File option {option} changed from {old} to {new}: code generated for that language gets a new name or "
          "layout, so every user of it (we generate Python, Go and TypeScript; anyone may generate more from our "
          "contracts) must change imports and names in the same step, or stop compiling."),
    fix="Keep the option as it was; a new name or layout goes with a new version package, {next_package}.")
_LANGUAGE_FIELD_OPTION = Explanation(
    what=("Field {number} ({name}) of {message}: {change}; that language's generated code for it changes type or "
          "checks, so its users must change in the same step, or misbehave at run time."),
    fix="Keep it as it was; for a new representation add a NEW field with a new number and deprecate this one.")
_CARDINALITY = Explanation(
    what=("Field {number} ({name}) of {message} changed from {old} to {new}: a singular reader that gets several "
          "values keeps only the last, silently, a repeated one sees a list of one, and packed numbers may fail to "
          "parse at all; the generated type changes (a list or a value) in every language, so code using {name} "
          "stops compiling."),
    fix=_NEW_FIELD)
_PRESENCE = Explanation(  # FIELD_SAME_CARDINALITY when neither side is repeated: `optional` added or removed
    what=("Field {number} ({name}) of {message} changed from {old} to {new} (`optional` added or removed): the bytes "
          "still read the same, but the generated API changes in every language (has/clear methods; a value or a "
          "pointer in Go), so code using {name} stops compiling, and \"set to the default\" and \"not set\" no "
          "longer mean the same on both sides."),
    fix=("Keep the field as it was; if you need to know whether it was set, add a NEW `optional` field with a new "
         "number and deprecate this one."))

EXPLANATIONS: dict[str, Explanation] = {
    # fields
    "FIELD_NO_DELETE": Explanation(
        what=("Peers built from main still send field {number} ({name}) of {message}: code built from this change "
              "skips it as an unknown field, without an error, and the value is silently lost; peers built from "
              "main that read it now always get its default (\"\", 0, unset). Code that uses {name} stops "
              "compiling once it is regenerated."),
        fix=("Put field {number} back and mark it `[deprecated = true]` until no caller sets or reads it; remove "
             "it in a new version package, {next_package}. Never reuse the number or the name: when it goes, "
             "`reserved {number}; reserved \"{name}\";` in {message}.")),
    "FIELD_SAME_TYPE": Explanation(
        what=("Field {number} ({name}) of {message} changed type from {old} to {new}, but the wire still says only "
              "\"field {number}\": a peer built from main reads the bytes with the old type. Some pairs silently "
              "truncate or misread numbers (int32/int64, uint/sint, enum/int); others (scalar/message, "
              "string/message) read garbage or fail the whole message with a parse error. Generated code changes "
              "type in every language."),
        fix=_NEW_FIELD),
    "FIELD_SAME_NAME": Explanation(
        what=("Field {number} of {message} renamed from {old} to {new}. Binary gRPC still works (the wire carries "
              "the number, not the name), but proto3 JSON carries the name: the gateway answers 400 to a JSON body "
              "that still uses {old} (or its camelCase form), JSON readers stop seeing it, and every language's "
              "generated accessor changes name, so code using {old} no longer compiles."),
        fix=("Keep the old name. If the new one matters, add a NEW field with a new number and the new name, mark "
             "{old} `[deprecated = true]` and fill both; or rename in a new version package, {next_package}.")),
    "FIELD_SAME_JSON_NAME": Explanation(
        what=("Field {number} of {message}: its JSON name changed from \"{old}\" to \"{new}\". Binary gRPC still "
              "works; every proto3 JSON peer (the gateway's HTTP API, `meshctl call`, grpcurl) that uses "
              "\"{old}\" breaks: the gateway rejects it as an unknown field (400), responses no longer carry it."),
        fix=("Keep the JSON name: if the field's name must change, set `json_name = \"{old}\"` on it; otherwise add "
             "a NEW field with a new number and deprecate this one.")),
    "FIELD_SAME_CARDINALITY": _CARDINALITY,
    "FIELD_SAME_LABEL": _CARDINALITY,  # its name before buf's v2 configuration
    "FIELD_SAME_ONEOF": Explanation(
        what=("Field {number} ({name}) of {message} {oneof_move}. The bytes are the same, but in a oneof setting "
              "one member clears the others, so values a peer built from main sends together now overwrite each "
              "other, silently; and the generated API changes (WhichOneof, case accessors) in every language."),
        fix=("Put it back where it was; for a new oneof, add NEW fields with new numbers inside it and deprecate "
             "the old ones.")),
    "FIELD_SAME_DEFAULT": Explanation(
        what=("Field {number} ({name}) of {message} changed its default from {old} to {new}: an unset field reads "
              "as {old} on peers built from main and as {new} on peers built from this change, so one message "
              "means two things."),
        fix="Keep the default; if the meaning must change, add a NEW field with a new number and deprecate this one."),
    "FIELD_SAME_JSTYPE": Explanation(
        what=("Field {number} ({name}) of {message} changed jstype from {old} to {new}: JavaScript/TypeScript code "
              "generated with it sees a 64-bit value as a string in one and a number in the other (JS_NUMBER loses "
              "precision above 2^53), so TypeScript built from main no longer type-checks or misreads big values."),
        fix="Keep the jstype; for a new representation add a NEW field with a new number and deprecate this one."),
    "FIELD_SAME_UTF8_VALIDATION": Explanation(
        what=("String field {number} ({name}) of {message} changed UTF-8 validation from {old} to {new}: with "
              "VERIFY a peer that sends invalid UTF-8 (accepted before) fails to parse and the whole call fails; "
              "without it, peers built from main may reject what code built from this change sends."),
        fix="Keep the validation; for arbitrary bytes add a NEW `bytes` field with a new number."),
    "FIELD_SAME_JAVA_UTF8_VALIDATION": _LANGUAGE_FIELD_OPTION,
    "FIELD_SAME_CPP_STRING_TYPE": _LANGUAGE_FIELD_OPTION,
    "FIELD_SAME_CTYPE": _LANGUAGE_FIELD_OPTION,  # its name before buf's v2 configuration
    # enums
    "ENUM_VALUE_NO_DELETE": Explanation(
        what=("Value {number} of enum {enum} was deleted, but peers built from main still send {number}: code "
              "built from this change has no name for it (Python sees a bare int, Go an unnamed value, TypeScript "
              "UNRECOGNIZED; closed enums drop it into unknown fields), switch statements fall through to their "
              "default, and a JSON request naming the value is rejected (400 at the gateway)."),
        fix=("Put the value back and mark it `[deprecated = true]`; remove it in a new version package, "
             "{next_package}. When it goes, reserve its number and name: `reserved {number}; reserved "
             "\"NAME\";` in {enum}.")),
    "ENUM_VALUE_SAME_NAME": Explanation(
        what=("Value {number} of enum {enum} renamed from {old} to {new}. Binary gRPC still works (the number is "
              "on the wire), but proto3 JSON carries the name: the gateway and JSON readers reject \"{old}\" and "
              "responses say \"{new}\" to callers that expect \"{old}\"; the generated constant changes name in "
              "every language, so code using {old} no longer compiles."),
        fix=("Keep {old}; to offer the new name, add it as an alias beside it: `option allow_alias = true;` "
             "and `{new} = {number};`, with {old} marked `[deprecated = true]`.")),
    "ENUM_NO_DELETE": Explanation(
        what=("Enum {name} was deleted: generated code that uses it (fields, switch statements, constants) stops "
              "compiling once regenerated, in every language."),
        fix=_KEEP_DEPRECATED),
    "ENUM_SAME_TYPE": Explanation(
        what=("Enum {enum} changed from {old} to {new}: a closed enum puts values it does not know into unknown "
              "fields (the field reads as its default), an open one keeps them, so peers built from main and from "
              "this change disagree about every value added later."),
        fix="Keep the enum type; a differently typed enum is a new enum (a new name) used by NEW fields."),
    "ENUM_SAME_JSON_FORMAT": Explanation(
        what=("Enum {enum}: its JSON support (features.json_format) changed, so proto3 JSON peers (the gateway, "
              "`meshctl call`) may no longer be able to write or read it."),
        fix="Keep json_format as it was."),
    # messages, oneofs, extensions, reservations
    "MESSAGE_NO_DELETE": Explanation(
        what=("Message {name} was deleted: generated code that builds or reads it stops compiling once "
              "regenerated, in every language, and anything that still names it (a field or an RPC of another "
              "package, a google.protobuf.Any) breaks."),
        fix=_KEEP_DEPRECATED),
    "MESSAGE_SAME_JSON_FORMAT": Explanation(
        what=("Message {message}: its JSON support (features.json_format) changed, so proto3 JSON peers (the gateway, "
              "`meshctl call`) may no longer be able to write or read it."),
        fix="Keep json_format as it was."),
    "MESSAGE_SAME_REQUIRED_FIELDS": Explanation(
        what=("Message {message} gained or lost a required field: a message without a field the other side requires "
              "fails to parse there, so every call between old and new peers that carries it fails."),
        fix="Never add or remove required fields; add an optional field with a new number and check it in the server."),
    "MESSAGE_NO_REMOVE_STANDARD_DESCRIPTOR_ACCESSOR": Explanation(
        what=("Message {message} set no_standard_descriptor_accessor: C++ code generated for it loses its "
              "descriptor() accessor, so code calling it no longer compiles."),
        fix="Remove the option again."),
    "MESSAGE_SAME_MESSAGE_SET_WIRE_FORMAT": Explanation(
        what=("Message {message} changed message_set_wire_format: the bytes of the message change shape; old peers "
              "cannot read them."),
        fix="Keep the option as it was."),
    "ONEOF_NO_DELETE": Explanation(
        what=("Oneof {name} of {message} was deleted: its generated API (WhichOneof, case enums) disappears, so code "
              "using it stops compiling, and its former members no longer clear each other."),
        fix="Keep the oneof; deprecate members you no longer want and add NEW fields with new numbers."),
    "EXTENSION_NO_DELETE": Explanation(
        what=("Extension {name} was deleted: peers built from main still send it; code built from this change "
              "keeps it as unknown bytes it cannot read, and code using the extension stops compiling."),
        fix="Keep it, with `[deprecated = true]`; remove it only in a new version package, {next_package}."),
    "EXTENSION_MESSAGE_NO_DELETE": Explanation(
        what=("An extension range of {message} was removed: extensions others declared in it (in their own files) "
              "no longer compile against it."),
        fix="Put the `extensions` range back."),
    "RESERVED_MESSAGE_NO_DELETE": Explanation(
        what=("A reservation of {owner} was removed ({reserved}): the number or name it kept out of use can be "
              "reused now, and a peer built from an old version that still uses it would read the new field's "
              "bytes as the old one, silently wrong."),
        fix="Put the `reserved` line back: a reservation is forever."),
    "RESERVED_ENUM_NO_DELETE": Explanation(
        what=("A reservation of enum {owner} was removed ({reserved}): the number or name it kept out of use can "
              "be reused now, and a peer built from an old version reads the new value as the old one."),
        fix="Put the `reserved` line back: a reservation is forever."),
    # services and RPCs
    "RPC_NO_DELETE": Explanation(
        what=("Callers built from main still call /{package}.{service}/{rpc}: servers built from this change answer "
              "UNIMPLEMENTED (the gateway turns it into HTTP 501), and the generated stub method disappears, so "
              "calling code stops compiling once regenerated."),
        fix=("Put the RPC back with `option deprecated = true;` and keep serving it until no caller is left (the "
             "traces show who calls it); remove it only in a new version package, {next_package}, served beside "
             "{package}.")),
    "RPC_SAME_REQUEST_TYPE": Explanation(
        what=("The request of {service}.{rpc} changed from {old} to {new}: callers built from main still send {old}'s "
              "bytes and the server reads them as {new}, field number by field number: fields that happen to match "
              "are misread, the rest are dropped, silently; the generated stubs change signature."),
        fix=("Keep the request type and evolve {old} itself (new fields with new numbers). For a different shape, "
             + _new_rpc("keep"))),
    "RPC_SAME_RESPONSE_TYPE": Explanation(
        what=("The response of {service}.{rpc} changed from {old} to {new}: callers built from main read {new}'s "
              "bytes as {old}, field number by field number: fields that happen to match are misread, the rest are "
              "dropped, silently; the generated stubs change signature."),
        fix=("Keep the response type and evolve {old} itself (new fields with new numbers). For a different shape, "
             + _new_rpc("keep"))),
    "RPC_SAME_CLIENT_STREAMING": Explanation(
        what=("RPC {service}.{rpc} changed from {old} to {new}: callers and servers built from main expect the other "
              "shape of call; a unary side that receives more than one message fails the call (INTERNAL), and the "
              "generated stubs change signature in every language, so callers stop compiling."),
        fix=_new_rpc("Keep")),
    "RPC_SAME_SERVER_STREAMING": Explanation(
        what=("RPC {service}.{rpc} changed from {old} to {new}: callers and servers built from main expect the other "
              "shape of call; a unary side that receives more than one message fails the call (INTERNAL), and the "
              "generated stubs change signature in every language, so callers stop compiling."),
        fix=_new_rpc("Keep")),
    "RPC_SAME_IDEMPOTENCY_LEVEL": Explanation(
        what=("The idempotency_level of {service}.{rpc} changed from {old} to {new}: clients that act on it (retries, "
              "Connect's GET for NO_SIDE_EFFECTS) built from main may now retry or cache a call that is no longer "
              "safe to, or stop doing it."),
        fix="Keep the level; an RPC whose side effects changed is a new RPC: " + _new_rpc("keep")),
    "SERVICE_NO_DELETE": Explanation(
        what=("Service {name} was deleted: every caller built from main gets UNIMPLEMENTED for each of its RPCs, "
              "and its generated clients and server bases disappear, so code using them stops compiling."),
        fix=_KEEP_DEPRECATED),
    # files
    "FILE_NO_DELETE": Explanation(
        what=("The file {file} was deleted (a moved file counts as deleted): everything it declared is gone, so code "
              "generated from main that imports it stops compiling, and callers of its services get "
              "UNIMPLEMENTED."),
        fix=("Put the file back where it was; retire a whole version with a new version package beside it, and "
             "delete the old one only once no caller is left.")),
    "FILE_SAME_PACKAGE": Explanation(
        what=("The package changed from {old} to {new}, and with it every full name: the gRPC method paths "
              "(/{old}.Service/Method), so callers built from main get UNIMPLEMENTED; the type URLs of Any; and "
              "every generated import path (Python, Go and TypeScript), so all code using it breaks at once."),
        fix=("Keep {old} in its folder and put the new package in its own (protos/{new_dir}/) as a new version, "
             "served beside the old one; move the callers over, then delete the old one.")),
    "FILE_SAME_SYNTAX": Explanation(
        what=("The syntax changed from {old} to {new}: with it the defaults of field presence, enum openness, UTF-8 "
              "validation and packed encoding may change, so generated APIs and the meaning of unset fields change."),
        fix=("Keep the syntax; or set features so that every field keeps its old behaviour (buf then reports what "
             "still differs), or migrate in a new version package, {next_package}.")),
    "FILE_SAME_GO_PACKAGE": Explanation(
        what=("The go_package option changed from {old} to {new}: the Go import path of the generated code moves, "
              "so every Go import of it (services/inventory, mesh/runtime-go, the conformance probe) breaks at "
              "compile time."),
        fix="Keep go_package as it was; a new import path comes with a new version package, {next_package}."),
}
for _option in ("CC_ENABLE_ARENAS", "CC_GENERIC_SERVICES", "CSHARP_NAMESPACE", "JAVA_GENERIC_SERVICES",
                "JAVA_MULTIPLE_FILES", "JAVA_OUTER_CLASSNAME", "JAVA_PACKAGE", "JAVA_STRING_CHECK_UTF8",
                "OBJC_CLASS_PREFIX", "OPTIMIZE_FOR", "PHP_CLASS_PREFIX", "PHP_METADATA_NAMESPACE", "PHP_NAMESPACE",
                "PY_GENERIC_SERVICES", "RUBY_PACKAGE", "SWIFT_PREFIX"):
    EXPLANATIONS[f"FILE_SAME_{_option}"] = _LANGUAGE_OPTION

COMPILE = Explanation(what="Protos/ does not compile here, so buf cannot compare it with main.",
                      fix="Fix the syntax (`buf build` says the same), then run `make breaking` again.")
UNKNOWN = Explanation(
    what=("The change breaks code generated from main, or peers built from it, as buf's message says (rule {rule} "
          "has no plain-words text here yet)."),
    fix=("Keep the old definition as it was; add the new shape beside it (a NEW field number, a new RPC) and "
         "deprecate the old one, or make the change in a new version package, {next_package}."))


_GENERIC = {"number": "N", "name": "it", "message": "the message", "enum": "the enum", "service": "the service",
            "rpc": "the RPC", "old": "the old value", "new": "the new value", "option": "an option",
            "file": "a file", "owner": "the message", "reserved": "a reserved number or name",
            "oneof_move": "moved into or out of a oneof", "change": "a language-specific option changed",
            "package": "this package", "next_package": "a new version package", "new_dir": "NEW/PACKAGE/v2"}


class _Facts(dict):
    """What a finding names; a missing fact reads as a generic phrase (_GENERIC)."""

    def __missing__(self, key: str) -> str:
        return _GENERIC.get(key, key)


def _package_of(path: str, module: str) -> str | None:
    """shop.catalog.v1 for protos/shop/catalog/v1/catalog.proto (buf's STANDARD lint: the package is its folder)."""
    parts = Path(path).parts
    if len(parts) < 3 or parts[0] != module:
        return None
    return ".".join(parts[1:-1])


def _next_version(package: str) -> str:
    """shop.catalog.v2 for shop.catalog.v1 (and for shop.catalog.v1beta1); PACKAGE.v2 when it has no version."""
    found = re.fullmatch(r"(.*\.)v(\d+)(?:(?:alpha|beta)\d*)?", package)
    return f"{found.group(1)}v{int(found.group(2)) + 1}" if found else f"{package}.v2"


_PATTERNS = (  # buf 1.75's wording, as its findings read (tests/unit/fixtures/buf_breaking.jsonl)
    r'[Ff]ield "(?P<number>\d+)"(?: with name "(?P<name>[^"]+)")? on message "(?P<message>[^"]+)"',
    r'[Ee]num value "(?P<number>\d+)" on enum "(?P<enum>[^"]+)"',
    r'RPC "(?P<rpc>[^"]+)" on service "(?P<service>[^"]+)"',
    r'^Enum "(?P<enum>[^"]+)"',
    r'^Message "(?P<message>[^"]+)"',
    r'Previously present (?:enum|message|service|extension) "(?P<name>[^"]+)"',
    r'Previously present oneof "(?P<name>[^"]+)" on message "(?P<message>[^"]+)"',
    r'Previously present file "(?P<file>[^"]+)"',
    r'[Rr]eserved (?P<reserved>(?:name|range) "[^"]+") on (?:message|enum) "(?P<owner>[^"]+)"',
    r'[Ff]ile option "(?P<option>[^"]+)"',
    r'on message "(?P<message>[^"]+)"',
    r'(?P<oneof_move>moved from (?:inside|outside) to (?:inside|outside) a oneof)',
    r'(?P<change>changed [^"]*?(?:validation|string type) from .+?)\.$',
    r'from (?P<old>"[^"]*"|\S+(?: \S+)?) to (?P<new>"[^"]*"|\S+(?: \S+)?)\.$',
)


def _facts(finding: Finding, module: str) -> _Facts:
    facts = _Facts(rule=finding.rule)
    for pattern in _PATTERNS:
        found = re.search(pattern, finding.message)
        if found:
            for key, value in found.groupdict().items():
                if value is not None and key not in facts:
                    facts[key] = value.strip('"') if key in ("old", "new") else value
    if "file" in facts:
        facts["file"] = f"{module}/{facts['file']}"
    package = _package_of(finding.path, module)
    if finding.rule == "FILE_SAME_PACKAGE" and "old" in facts:
        package = facts["old"]
        facts["new_dir"] = facts["new"].replace(".", "/")
    if package:
        facts["package"] = package
        facts["next_package"] = _next_version(package)
    return facts


def explain(finding: Finding, module: str = MODULE) -> tuple[str, str]:
    """(what breaks, the usual fix) for one finding, in plain words."""
    facts = _facts(finding, module)
    words = _words(finding.rule, facts)
    return words.what.format_map(facts), words.fix.format_map(facts)


def _words(rule: str, facts: _Facts) -> Explanation:
    if rule == "COMPILE":
        return COMPILE
    if rule == "FIELD_SAME_CARDINALITY" and "repeated" not in (facts["old"], facts["new"]):
        return _PRESENCE
    return EXPLANATIONS.get(rule, UNKNOWN)


def _paragraph(label: str, text: str) -> str:
    return textwrap.fill(text, WIDTH, initial_indent=f"  {label:<8}", subsequent_indent=" " * 10,
                         break_on_hyphens=False, break_long_words=False)


def render(findings: list[Finding], module: str = MODULE, branch: str = BRANCH) -> str:
    blocks = []
    for finding in findings:
        what, fix = explain(finding, module)
        blocks.append("\n".join([f"{finding.where}: {finding.rule}", _paragraph("buf:", finding.message),
                                 _paragraph("breaks:", what), _paragraph("fix:", fix)]))
    broken = sum(1 for f in findings if f.rule != "COMPILE")
    summary = (f"{module}/ does not compile: fix it, then run make breaking again" if broken < len(findings)
               else f"{broken} breaking change{'s' if broken != 1 else ''} against {branch}")
    return "\n\n".join([*blocks, summary])


def _has_branch(root: Path, branch: str) -> bool:
    if not (root / ".git").exists():  # a tarball, or a folder inside another repository
        return False
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], cwd=root,
                           capture_output=True, text=True, check=False)
    return found.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make breaking", description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default=BRANCH, metavar="BRANCH", help=f"the branch to compare with ({BRANCH})")
    parser.add_argument("--module", default=MODULE, help=f"the buf module folder to check ({MODULE})")
    parser.add_argument("--buf", default=str(BUF), help="the buf binary (the pinned one of tools/proto)")
    args = parser.parse_args(argv)
    root = Path.cwd()
    if not _has_branch(root, args.against):
        print(f"no {args.against} branch here: breaking check skipped")
        return 0
    against = f".git#branch={args.against},subdir={args.module}"
    if not Path(args.buf).exists():
        print(f"{args.buf} is missing: run `make tools`", file=sys.stderr)
        return 2
    print(f"buf breaking {args.module} --against '{against}'", flush=True)
    run = subprocess.run([args.buf, "breaking", args.module, "--against", against, "--error-format", "json"],
                         cwd=root, capture_output=True, text=True, check=False)
    if run.returncode not in (0, BUF_FINDINGS):
        sys.stderr.write(run.stderr or run.stdout)
        return run.returncode
    findings = parse(run.stdout, args.module)
    if not findings:
        print(f"no breaking changes against {args.against}")
        return 0
    print(render(findings, args.module, args.against))
    return 1


if __name__ == "__main__":
    sys.exit(main())
