"""meshctl: see what the running mesh does (`status`, `routes`, `call`, `traces`, `trace`); the mesh is found as the
runner places it (MESH_RUN_DIR, MESH_PORT_OFFSET). `new service` adds a service to the repository."""

from __future__ import annotations

import argparse
import sys

from mesh.ctl import call, completion, routes, scaffold, status, trace
from mesh.ctl.where import Mesh, MeshDown


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshctl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("status", help="instances (health, version, language, uptime, restarts, certificate "
                                       "expiry), what every xDS client ACKed or NACKed, policy errors")
    routes_ = commands.add_parser("routes", help="the listeners, routes, clusters and endpoints an instance holds")
    routes_.add_argument("instance", nargs="?", metavar="INSTANCE",
                         help="an instance id (meshctl status lists them); none: a line per instance")
    routes_.add_argument("--json", action="store_true", help="the resources as proto3 JSON")
    call_ = commands.add_parser("call", help="call SERVICE/Method with a JSON request over the mesh's mTLS")
    call_.add_argument("target", metavar="SERVICE/Method",
                       help="catalog/ListProducts or shop.catalog.v1.CatalogService/ListProducts")
    call_.add_argument("body", nargs="?", default="{}", metavar="JSON", help="the request (proto3 JSON; default {})")
    call_.add_argument("--as", dest="caller", default="meshctl", metavar="SERVICE",
                       help="the workload identity to call as (default meshctl; AuthorizationPolicies decide)")
    trace_ = commands.add_parser("trace", help="a trace from Jaeger as a waterfall in the terminal")
    trace_.add_argument("trace_id", metavar="ID", help="32 hex digits (meshctl call and X-Trace-Id print it)")
    trace_.add_argument("--html", metavar="FILE", help="write the waterfall as one self-contained HTML page instead")
    trace_.add_argument("--wait", type=float, default=0, metavar="S",
                        help="wait up to S seconds for the trace to arrive and stop growing (spans come a second late)")
    traces_ = commands.add_parser("traces", help="recent traces from Jaeger, one line each, newest first")
    traces_.add_argument("--service", metavar="S", help="traces that touch this service (default: any)")
    traces_.add_argument("--last", type=int, default=10, metavar="N", help="how many (10)")
    traces_.add_argument("--errors", action="store_true", help="only traces with an error span")
    traces_.add_argument("--minutes", type=float, default=60, metavar="M", help="how far back to look (60)")
    new_ = commands.add_parser("new", help="add a service to the repository: meshctl new service NAME --lang python|go|ts")
    new_what = new_.add_subparsers(dest="what", required=True, metavar="WHAT")
    service_ = new_what.add_parser(
        "service", help="a proto package, a service on its language's runtime with a test, and its entries in the "
                        "topology, compose, Kubernetes and istio/", description=scaffold.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    service_.add_argument("name", metavar="NAME", help=scaffold.NAME_FORM)
    service_.add_argument("--lang", required=True, metavar="LANG", help="python, go or ts")
    completion_ = commands.add_parser("completion", help="a shell completion script: source <(meshctl completion bash)")
    completion_.add_argument("shell", choices=("bash", "zsh"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "completion":
        print(completion.script(args.shell))
        return 0
    if args.command == "new":
        return scaffold.run(args.name, args.lang)
    mesh = Mesh.from_env()
    try:
        if args.command == "status":
            return status.run(mesh)
        if args.command == "routes":
            return routes.run(mesh, args.instance, args.json)
        if args.command == "traces":
            return trace.run_list(mesh, args.service, args.last, args.errors, args.minutes)
        if args.command == "trace":
            return trace.run(mesh, args.trace_id, args.html, args.wait)
        return call.run(mesh, args.target, args.body, args.caller)
    except MeshDown as error:
        print(f"meshctl: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
