"""`meshctl new service NAME --lang python|go|ts`: a new service of the mesh, a sibling of catalog
(Python), inventory (Go) or pricing (TypeScript), that `make up` runs and `make test` tests as it is.

It writes, from the templates in mesh/ctl/templates/ (`{{key}}` placeholders):
- protos/shop/NAME/v1/NAME.proto: NAMEService with one RPC, Greet, whose request field is validated;
- services/NAME/: the service on its language's runtime (health, Consul registration, tracing and the
  xDS server come from the runtime), its Dockerfile, and a test of the handler where that language
  keeps its tests (Python: tests/unit/test_NAME.py; Go: beside the code; TypeScript: the workspace's
  `npm test`);
- its entry in SERVICES (mesh/runner/topology.py, above the marker line), on the next free ports;
- istio/NAME.yaml (a DestinationRule, ISTIO_MUTUAL) and an AuthorizationPolicy in istio/security.yaml
  (every workload of the namespace may call it);
- TypeScript only: the workspace in package.json, tsconfig.json and package-lock.json;
then regenerates gen/ (`make proto`), docker-compose.yml and kubernetes/base from the topology.
Nothing is written when the name is taken or not of the allowed form.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import keyword
import os
import pathlib
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence

from mesh.runner import consul_acl, topology

__all__ = ["LANGUAGES", "NAME_FORM", "Plan", "ScaffoldError", "plan", "run", "write"]

TEMPLATES = pathlib.Path(__file__).resolve().parent / "templates"
# --lang value -> the topology's language
LANGUAGES = {"python": "python", "go": "go", "ts": "typescript"}
LANGUAGE_ALIASES = {"typescript": "ts", "py": "python", "golang": "go"}
# One name is a proto package segment, a Python module, a Go import path element, a DNS label
# (Kubernetes Service, Consul, the Istio host) and an SPIFFE service account: lowercase letters and
# digits only (a hyphen is no Python or proto identifier, an underscore no DNS label).
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]{1,29}")
NAME_FORM = "2 to 30 lowercase letters and digits, starting with a letter (e.g. greeter, search2)"
# Names the mesh already uses for something else: its Consul tokens, its infrastructure processes,
# the workload identity meshctl calls as, and the top-level packages.
RESERVED = frozenset({*consul_acl.token_names(()), "consul", "jaeger", "certs", "istiod", "meshctl", "mesh", "shop",
                      "services", "polymesh", "istio", "gen", "tests"})
TOPOLOGY_MARKER = "# `meshctl new service` adds its services above this line (mesh/ctl/scaffold.py)"
SECURITY_FILE = "istio/security.yaml"
# The line of every TypeScript Dockerfile that copies the workspaces' package.json files: a new
# workspace's is copied before it (npm ci reads every workspace the lock names).
TS_DOCKERFILE_ANCHOR = "COPY tests/conformance/probes/ts/package.json tests/conformance/probes/ts/"
PORT_STEP = 10


class ScaffoldError(Exception):
    """A refusal: nothing was written."""


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str
    lang: str  # python | go | ts
    port: int
    admin_port: int
    files: dict[str, str]  # path relative to the root -> content (new files only)

    @property
    def language(self) -> str:
        return LANGUAGES[self.lang]

    @property
    def class_name(self) -> str:
        return self.name[0].upper() + self.name[1:]


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise ScaffoldError(f"{name!r} is not a service name: use {NAME_FORM}")
    if name in RESERVED or keyword.iskeyword(name):
        raise ScaffoldError(f"{name!r} is reserved (the mesh uses it for something else): choose another name")


def check_lang(lang: str) -> str:
    lang = LANGUAGE_ALIASES.get(lang, lang)
    if lang in LANGUAGES:
        return lang
    close = difflib.get_close_matches(lang.lower(), [*LANGUAGES, *LANGUAGE_ALIASES], n=1, cutoff=0.6)
    hint = f" (did you mean {LANGUAGE_ALIASES.get(close[0], close[0])}?)" if close else ""
    raise ScaffoldError(f"unknown language {lang!r}{hint}: --lang is one of {', '.join(LANGUAGES)}")


def next_ports(services: Sequence[topology.Service]) -> tuple[int, int]:
    """The next service port of the 500N1 series (catalog 50051, ... orders 50091) and its admin port
    19000 + the same tail (19051, ... 19091), both free of every instance's and infrastructure port."""
    grpc_ports = [s.port for s in services if s.protocol == "grpc" and 50000 < s.port < 60000]
    taken = {p for s in services for i in s.instances for p in (i.port, i.admin_port)} | {s.port for s in services}
    taken |= set(topology.BASE_PORTS.values())
    port = max(grpc_ports, default=50041) + PORT_STEP
    while port in taken or port - 31000 in taken or port + 1 in taken:
        port += PORT_STEP
    return port, port - 31000


def render(text: str, values: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template placeholder {{{{{key}}}}} has no value")
        return values[key]
    return re.sub(r"\{\{([a-z_A-Z]+)\}\}", value, text)


def _workspaces(root: pathlib.Path) -> list[str]:
    workspaces: list[str] = json.loads((root / "package.json").read_text())["workspaces"]
    return workspaces


def _values(root: pathlib.Path, name: str, lang: str, port: int, admin_port: int) -> dict[str, str]:
    values = {"name": name, "Name": name[0].upper() + name[1:], "language": LANGUAGES[lang], "port": str(port),
              "admin_port": str(admin_port)}
    if lang == "ts":
        runtime = json.loads((root / "mesh" / "runtime-ts" / "package.json").read_text())["dependencies"]
        values["grpc_js_version"] = runtime["@grpc/grpc-js"]
        values["bufbuild_protobuf_version"] = runtime["@bufbuild/protobuf"]
        folders = [*_workspaces(root), f"services/{name}"]
        values["workspace_package_copies"] = "".join(f"COPY {w}/package.json {w}/\n" for w in folders
                                                     if w != "mesh/runtime-ts")
    return values


def _template_files(lang: str) -> list[tuple[pathlib.Path, pathlib.Path]]:
    """(template, relative path with NAME in it) for the common templates and the language's."""
    found = []
    for folder in (TEMPLATES / "common", TEMPLATES / LANGUAGES[lang]):
        for template in sorted(folder.rglob("*.tmpl")):
            if template.name == "authorization-policy.yaml.tmpl":
                continue
            found.append((template, template.relative_to(folder).with_suffix("")))
    return found


def plan(root: pathlib.Path, name: str, lang: str, services: Sequence[topology.Service]) -> Plan:
    """What `write` would write, or ScaffoldError (nothing written) when the name is taken or bad."""
    check_name(name)
    lang = check_lang(lang)
    if any(s.name == name for s in services):
        raise ScaffoldError(f"service {name!r} already exists in mesh/runner/topology.py: nothing written")
    port, admin_port = next_ports(services)
    values = _values(root, name, lang, port, admin_port)
    files: dict[str, str] = {}
    for template, relative in _template_files(lang):
        path = pathlib.Path(*(part.replace("NAME", name) for part in relative.parts))
        files[str(path)] = render(template.read_text(), values)
    if lang == "go":
        files[f"services/{name}/go.mod"] = _go_mod(root, name)
        files[f"services/{name}/go.sum"] = _go_sum(root)
    existing = sorted(path for path in files if (root / path).exists())
    if (root / "services" / name).exists():
        existing.insert(0, f"services/{name}/")
    if existing:
        raise ScaffoldError(f"service {name!r} already exists ({', '.join(existing)}): nothing written")
    if topology_source(root).count(TOPOLOGY_MARKER) != 1:
        raise ScaffoldError(f"mesh/runner/topology.py must have the marker line {TOPOLOGY_MARKER!r} once in "
                            "SERVICES: nothing written")
    return Plan(name, lang, port, admin_port, files)


# --- Go: the module's go.mod and go.sum, from the runtime's (the same pinned versions) ---

def _go_requires(text: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+(\S+) (v\S+)(?: // indirect)?$", text, re.MULTILINE))


def _go_mod(root: pathlib.Path, name: str) -> str:
    runtime = (root / "mesh" / "runtime-go" / "go.mod").read_text()
    go_version = re.search(r"^go (\S+)$", runtime, re.MULTILINE)
    required = {**_go_requires((root / "gen" / "go" / "go.mod").read_text()), **_go_requires(runtime)}
    direct = ("google.golang.org/genproto/googleapis/rpc", "google.golang.org/grpc")
    lines = [f"\t{module} {required[module]}" for module in direct if module in required]
    lines += ["\tpolymesh.local/gen/go v0.0.0", "\tpolymesh.local/mesh/runtime-go v0.0.0"]
    indirect = [f"\t{module} {version} // indirect" for module, version in sorted(required.items())
                if module not in direct and not module.startswith("polymesh.local/")]
    return (f"// The {name} service (scaffolded by `meshctl new service`): the runtime's pinned versions.\n"
            f"module polymesh.local/services/{name}\n\ngo {go_version.group(1) if go_version else '1.26'}\n\n"
            "replace (\n\tpolymesh.local/gen/go => ../../gen/go\n\tpolymesh.local/mesh/runtime-go => ../../mesh/runtime-go\n)\n\n"
            "require (\n" + "\n".join(lines) + "\n)\n\nrequire (\n" + "\n".join(indirect) + "\n)\n")


def _go_sum(root: pathlib.Path) -> str:
    lines: set[str] = set()
    for path in (root / "mesh" / "runtime-go" / "go.sum", root / "gen" / "go" / "go.sum"):
        lines |= set(path.read_text().splitlines())
    return "\n".join(sorted(line for line in lines if line)) + "\n"


def _go_tidy(root: pathlib.Path, name: str) -> None:
    """`go mod tidy -e` from the module cache (GOPROXY=off: the runtime's modules are there once it
    was built), else from the proxy; it drops what the service does not use."""
    folder = root / "services" / name
    for proxy in ("off", None):
        env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
        if proxy:
            env["GOPROXY"] = proxy
        done = subprocess.run(["go", "mod", "tidy", "-e"], cwd=folder, env=env, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return
    raise ScaffoldError(f"go mod tidy in services/{name} failed:\n{done.stderr.strip()}")


# --- edits of existing files ---

def topology_source(root: pathlib.Path) -> str:
    return (root / "mesh" / "runner" / "topology.py").read_text()


def topology_entry(p: Plan) -> str:
    return (f'    Service("{p.name}", "{p.language}", {p.port}, (Instance("{p.name}-v1", "v1", {p.port}, '
            f'{p.admin_port}),)),\n')


def _insert_before_line(text: str, marker: str, insertion: str) -> str:
    at = text.index(marker)
    line_start = text.rindex("\n", 0, at) + 1
    return text[:line_start] + insertion + text[line_start:]


def _edit_topology(root: pathlib.Path, p: Plan) -> None:
    text = _insert_before_line(topology_source(root), TOPOLOGY_MARKER, topology_entry(p))
    compile(text, "topology.py", "exec")  # never leave a topology that does not parse
    (root / "mesh" / "runner" / "topology.py").write_text(text)


def _edit_security(root: pathlib.Path, p: Plan) -> None:
    path = root / SECURITY_FILE
    policy = render((TEMPLATES / "common" / "istio" / "authorization-policy.yaml.tmpl").read_text(), {"name": p.name})
    text = path.read_text()
    path.write_text(text + ("" if text.endswith("\n") else "\n") + policy)


def _insert_sorted(items: list[str], item: str, prefix: str) -> list[str]:
    """item among the entries starting with prefix, in order (after them all, else at the end)."""
    out = list(items)
    later = [i for i, existing in enumerate(out) if existing.startswith(prefix) and existing > item]
    earlier = [i for i, existing in enumerate(out) if existing.startswith(prefix) and existing < item]
    out.insert(later[0] if later else earlier[-1] + 1 if earlier else len(out), item)
    return out


def _edit_typescript(root: pathlib.Path, p: Plan) -> None:
    folder = f"services/{p.name}"
    package_path = root / "package.json"
    package = json.loads(package_path.read_text())
    package["workspaces"] = _insert_sorted(package["workspaces"], folder, "services/")
    package_path.write_text(json.dumps(package, indent=2) + "\n")

    tsconfig_path = root / "tsconfig.json"
    tsconfig = json.loads(tsconfig_path.read_text())
    paths = _insert_sorted([r["path"] for r in tsconfig["references"]], folder, "services/")
    tsconfig["references"] = [{"path": path} for path in paths]
    tsconfig_path.write_text(_tsconfig_json(tsconfig))

    # The lock as npm writes it for a workspace: its package entry and the node_modules link.
    lock_path = root / "package-lock.json"
    lock = json.loads(lock_path.read_text())
    manifest = json.loads(p.files[f"{folder}/package.json"])
    packages: dict[str, object] = lock["packages"]
    packages[""]["workspaces"] = package["workspaces"]  # type: ignore[index]
    entries = {folder: {key: manifest[key] for key in ("name", "version", "license", "dependencies", "engines")},
               f"node_modules/{manifest['name']}": {"resolved": folder, "link": True}}
    merged = {**packages, **entries}
    lock["packages"] = {"": merged.pop("")} | dict(sorted(merged.items()))
    lock_path.write_text(json.dumps(lock, indent=2) + "\n")

    for dockerfile in sorted(root.glob("services/*/Dockerfile")) + sorted(root.glob("tests/**/Dockerfile")):
        text = dockerfile.read_text()
        line = f"COPY {folder}/package.json {folder}/\n"
        if TS_DOCKERFILE_ANCHOR in text and line not in text:
            dockerfile.write_text(_insert_before_line(text, TS_DOCKERFILE_ANCHOR, line))


def _tsconfig_json(tsconfig: dict[str, object]) -> str:
    """tsconfig.json as the repository has it: a reference a line."""
    references = tsconfig["references"]
    assert isinstance(references, list)
    lines = ",\n".join(f"    {json.dumps(r, separators=(', ', ': ')).replace('{', '{ ').replace('}', ' }')}"
                       for r in references)
    rest = {k: v for k, v in tsconfig.items() if k != "references"}
    head = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in rest.items())
    return "{\n" + head + (",\n" if head else "") + '  "references": [\n' + lines + "\n  ]\n}\n"


# --- regeneration ---

PROTO_TOOLS = (".venv/.installed", ".tools/bin/protoc-gen-go", ".tools/bin/protoc-gen-go-grpc",
               "tools/proto/node_modules/.installed")


def _step(root: pathlib.Path, what: str, command: Sequence[str]) -> None:
    print(f"==> {what}: {' '.join(command)}", flush=True)
    done = subprocess.run(list(command), cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ScaffoldError(f"{what} failed ({' '.join(command)}):\n{(done.stdout + done.stderr).strip()[-3000:]}")


def regenerate(root: pathlib.Path) -> None:
    """gen/ for every language (`make proto`; tools already installed are taken as they are, not
    reinstalled), then docker-compose.yml and kubernetes/base from the new topology."""
    installed = [flag for tool in PROTO_TOOLS if (root / tool).exists() for flag in ("-o", tool)]
    _step(root, "generated code", ["make", "-s", *installed, "proto"])
    python = sys.executable
    _step(root, "docker-compose.yml", [python, "-m", "mesh.runner", "compose", "--write"])
    _step(root, "kubernetes/base", [python, "-m", "mesh.runner", "kube", "--write"])


def write(root: pathlib.Path, p: Plan, *, generate: bool = True) -> list[str]:
    """Write the plan's files and edits; returns every path written or changed."""
    for relative, text in p.files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    changed = ["mesh/runner/topology.py", SECURITY_FILE]
    _edit_topology(root, p)
    _edit_security(root, p)
    if p.lang == "ts":
        _edit_typescript(root, p)
        changed += ["package.json", "package-lock.json", "tsconfig.json"]
        changed += [str(d.relative_to(root)) for d in root.glob("services/*/Dockerfile")
                    if d.parent.name != p.name and f"COPY services/{p.name}/package.json" in d.read_text()]
    if generate:
        regenerate(root)
        changed += [f"gen/{{go,python,ts}}/shop/{p.name}/v1/", "docker-compose.yml", "kubernetes/base/",
                    "istio/Kustomization"]
        if p.lang == "go":
            _go_tidy(root, p.name)
    return [*p.files, *changed]


def next_steps(p: Plan) -> str:
    test = {"python": f"make test   (or: .venv/bin/python -m pytest tests/unit/test_{p.name}.py)",
            "go": f"make test   (or: cd services/{p.name} && go test ./...)",
            "ts": f"make test   (or: npm test --workspace services/{p.name})"}[p.lang]
    return (f"next:\n  make up\n  meshctl call {p.name}/Greet '{{\"name\": \"Ada\"}}'\n"
            f"  meshctl call {p.name}/Greet '{{}}'      # INVALID_ARGUMENT, a BadRequest naming the field\n"
            f"  {test}")


def run(name: str, lang: str, root: pathlib.Path | None = None, *, generate: bool = True) -> int:
    root = root or topology.ROOT
    try:
        p = plan(root, name, lang, topology.SERVICES)
    except ScaffoldError as error:
        print(f"meshctl new service: {error}", file=sys.stderr)
        return 2
    print(f"new {p.language} service {p.name}: port {p.port}, admin port {p.admin_port}, instance {p.name}-v1",
          flush=True)
    try:
        written = write(root, p, generate=generate)
    except ScaffoldError as error:
        print(f"meshctl new service: {error}", file=sys.stderr)
        return 1
    print("wrote:")
    for path in written:
        print(f"  {path}")
    print(next_steps(p))
    return 0
