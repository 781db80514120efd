"""`meshctl call SERVICE/Method '{json}'`: one call to one healthy instance of SERVICE over the
mesh's mTLS, as the workload `meshctl` (or `--as` another), its types found by server reflection
on the instance's admin port (like grpcurl). Prints the response as JSON (or the status, message
and details) and the trace id it sent (a W3C traceparent the instance continues)."""

from __future__ import annotations

import difflib
import json
import secrets
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.rpc import error_details_pb2  # noqa: F401  (json_format knows the details' types)
from google.type import money_pb2  # noqa: F401  (a type the services' messages use)
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

from mesh.ctl.where import Mesh, suggest
from mesh.runner import mtls, topology

__all__ = ["parse_target", "run"]

INFRA_PREFIXES = ("grpc.", "envoy.", "polymesh.conformance")
TIMEOUT = 10.0


def parse_target(target: str) -> tuple[str, str, str]:
    """`catalog/ListProducts` -> ("catalog", "", "ListProducts");
    `shop.catalog.v1.CatalogService/ListProducts` -> ("catalog", "shop.catalog.v1.CatalogService", "ListProducts")."""
    service, slash, method = target.strip("/").rpartition("/")
    if not slash or not service or not method:
        raise ValueError(f"{target!r}: give SERVICE/Method (catalog/ListProducts) or package.Service/Method")
    if "." in service:
        parts = service.split(".")
        mesh_service = parts[1] if parts[0] == "shop" and len(parts) > 2 else parts[-2] if len(parts) > 1 else service
        return mesh_service, service, method
    return service, "", method


def _instance(mesh: Mesh, service: str) -> tuple[str, str, int, int]:
    """(instance id, address, port, admin port) of a passing instance of `service`, from Consul."""
    names = [s.name for s in topology.SERVICES]
    if service not in names:
        raise LookupError(f"no service {service!r} in the mesh{suggest(service, names)}; services: {', '.join(names)}")
    entries = mesh.consul_get(f"/v1/health/service/{service}?passing=true")
    assert isinstance(entries, list)
    if not entries:
        raise LookupError(f"no passing instance of {service} in Consul (`meshctl status`)")
    entry = entries[0]["Service"]
    return entry["ID"], entry.get("Address") or "127.0.0.1", int(entry["Port"]), int(entry["Meta"]["admin_port"])


def build_pool(database: ProtoReflectionDescriptorDatabase, service: str) -> descriptor_pool.DescriptorPool:
    """A pool with the file defining `service` and what it needs. A reflection server may answer with
    a file that lists no dependencies though its fields use other files' types (the Node.js runtime's
    does: `google.type.Money`), so each type a file uses and does not define is looked up too: in
    the files this process knows (well-known and googleapis types), else by reflection."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def defined(file: descriptor_pb2.FileDescriptorProto) -> set[str]:
        prefix = f".{file.package}." if file.package else "."
        names: set[str] = set()

        def walk(messages: Iterable[descriptor_pb2.DescriptorProto], scope: str) -> None:
            for m in messages:
                names.add(scope + m.name)
                walk(m.nested_type, scope + m.name + ".")
                names.update(scope + m.name + "." + e.name for e in m.enum_type)
        walk(file.message_type, prefix)
        names.update(prefix + e.name for e in file.enum_type)
        return names

    def used(file: descriptor_pb2.FileDescriptorProto) -> set[str]:
        names: set[str] = set()

        def walk(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
            for m in messages:
                names.update(f.type_name for f in m.field if f.type_name)
                walk(m.nested_type)
        walk(file.message_type)
        names.update(t for s in file.service for m in s.method for t in (m.input_type, m.output_type))
        return names

    def qualify(file: descriptor_pb2.FileDescriptorProto) -> None:
        """Relative type names (`QuoteItem`, `google.type.Money`: the Node.js runtime sends them) made
        fully qualified, resolved as protoc does: the innermost scope that defines them, else as given."""
        own = defined(file)

        def walk(messages: Iterable[descriptor_pb2.DescriptorProto], scope: list[str]) -> None:
            for m in messages:
                inner = [*scope, m.name]
                for f in m.field:
                    if f.type_name and not f.type_name.startswith("."):
                        candidates = ("." + ".".join([*inner[:i], f.type_name]) for i in range(len(inner), -1, -1))
                        f.type_name = next((c for c in candidates if c in own), "." + f.type_name)
                walk(m.nested_type, inner)
        walk(file.message_type, file.package.split(".") if file.package else [])

    def add(file: descriptor_pb2.FileDescriptorProto) -> None:
        if file.name in added:
            return
        added.add(file.name)
        qualify(file)
        for dependency in file.dependency:
            add(database.FindFileByName(dependency))
        for name in sorted(used(file) - defined(file)):
            symbol = name.lstrip(".")
            try:
                pool.FindMessageTypeByName(symbol)
                continue
            except KeyError:
                pass
            try:
                known = descriptor_pool.Default().FindMessageTypeByName(symbol).file
                other = descriptor_pb2.FileDescriptorProto()
                known.CopyToProto(other)
            except KeyError:
                other = database.FindFileContainingSymbol(symbol)
            add(other)
            if other.name not in file.dependency:
                file.dependency.append(other.name)
        pool.Add(file)

    add(database.FindFileContainingSymbol(service))
    return pool


def _details(error: grpc.RpcError) -> list[dict[str, Any]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return []
    out = []
    for detail in status.details:
        try:
            out.append(json_format.MessageToDict(detail))
        except TypeError:
            out.append({"@type": detail.type_url, "value": detail.value.hex()})
    return out


def run(mesh: Mesh, target: str, body: str, caller: str) -> int:
    try:
        service, proto_service, method = parse_target(target)
        request_json = json.loads(body or "{}")
        mesh.require_running()
        protocols = {s.name: s.protocol for s in topology.SERVICES}
        if protocols.get(service, "grpc") != "grpc":
            raise ValueError(f"{service} speaks HTTP, not gRPC: curl it (README, 'Gateway HTTP API')")
        instance, host, port, admin = _instance(mesh, service)
    except (ValueError, LookupError) as error:
        print(error)
        return 2
    with grpc.insecure_channel(f"{host}:{admin}") as reflection:
        database = ProtoReflectionDescriptorDatabase(reflection)
        try:
            offered = [s for s in database.get_services() if not s.startswith(INFRA_PREFIXES)]
        except grpc.RpcError as error:
            print(f"reflection on {instance}'s admin port {host}:{admin} failed: {error.code().name}")
            return 1
        if not proto_service:
            if len(offered) != 1:
                print(f"{service} offers {', '.join(offered) or 'nothing'}: name one as package.Service/{method}")
                return 2
            proto_service = offered[0]
        elif proto_service not in offered:
            print(f"{instance} does not offer {proto_service}{suggest(proto_service, offered)}; "
                  f"it offers {', '.join(offered)}")
            return 2
        try:
            pool = build_pool(database, proto_service)
            descriptor = pool.FindServiceByName(proto_service)
        except (KeyError, TypeError, grpc.RpcError) as error:
            print(f"reflection on {instance}'s admin port {host}:{admin} gave no usable {proto_service}: {error}")
            return 1
        methods = [m.name for m in descriptor.methods]
        if method not in methods:
            close = difflib.get_close_matches(method, methods, n=1, cutoff=0.4)
            hint = f" (did you mean {proto_service}/{close[0]}?)" if close else ""
            print(f"{proto_service} has no method {method!r}{hint}; methods: {', '.join(methods)}")
            return 2
        rpc = descriptor.methods_by_name[method]
        if rpc.client_streaming or rpc.server_streaming:
            print(f"{proto_service}/{method} streams: meshctl call makes unary calls only")
            return 2
        request_type = message_factory.GetMessageClass(rpc.input_type)
        response_type = message_factory.GetMessageClass(rpc.output_type)
        try:
            request = json_format.ParseDict(request_json, request_type())
        except json_format.ParseError as error:
            print(f"the request is not a {rpc.input_type.full_name}: {error}")
            return 2
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    with mtls.direct_channel(mesh.run_dir, port, service, caller=caller, host=host) as channel:
        stub = channel.unary_unary(f"/{proto_service}/{method}", request_serializer=request_type.SerializeToString,
                                   response_deserializer=response_type.FromString)
        try:
            response = stub(request, timeout=TIMEOUT, metadata=(("traceparent", f"00-{trace_id}-{span_id}-01"),))
        except grpc.RpcError as error:
            answer = {"code": error.code().name, "message": error.details(), "details": _details(error)}
            if error.code() == grpc.StatusCode.PERMISSION_DENIED:
                answer["hint"] = (f"the AuthorizationPolicies (istio/security.yaml) decide by the caller's identity, "
                                  f"here spiffe://cluster.local/ns/{topology.NAMESPACE}/sa/{caller}: "
                                  f"--as SERVICE calls as another workload")
            print(json.dumps(answer, indent=2))
            print(f"\ninstance {instance} (as {caller})  trace id {trace_id}  (meshctl trace {trace_id})")
            return 1
    print(json.dumps(json_format.MessageToDict(response), indent=2))
    print(f"\ninstance {instance} (as {caller})  trace id {trace_id}  (meshctl trace {trace_id})")
    return 0
