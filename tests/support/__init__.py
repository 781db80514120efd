"""Helpers shared by the integration and end-to-end tests (imported as `support`).

- `ports.free_port()`: a port free on 127.0.0.1 right now.
- `poll.poll_until(condition, timeout, interval)`: wait for a condition instead of sleeping.
- `procs.Processes`: start processes with their output in a log file, stop them by PID, show
  log tails when a test fails (the `procs` fixture in tests/conftest.py).
- `consul.ConsulAgent`: a real `consul agent -dev` on free ports (the `consul_agent` fixture).
- `backends.start_catalog_backend(name)`: a real grpcio CatalogService that answers with its name;
  `backends.start_catalog_backend_process(procs, name)`: the same in a process of its own, with
  grpc.health.v1 (to register with a gRPC check, `ConsulAgent.register_grpc_checked`, and kill).
- `reports.add_failure_report(request, make_text)`: more text under a failing test.
- `ads.AdsClient`: a thin asyncio client of the real ADS stream, for protocol-level assertions.
- `fleet.ClientFleet`, `fleet.register_all`: hundreds of synthetic ADS clients and Consul
  instances at once (the scale test and `benchmarks/controlplane.py`).
- `xds.start_control_plane(procs, consul_http_addr)`, `xds.write_bootstrap(...)`: the control plane
  as `python -m mesh.xds`, and gRPC xDS bootstrap files as docs/runtime-contract.md describes.
- `xds_probes`: the xDS probe clients of tests/xds/probes (Python, Go, Node): built, their command
  lines, their output (one line per call naming the backend that answered).
- `istio`: the `catalog` DestinationRule (subsets v1, v2) and VirtualServices, written atomically.

For the traffic tests through the running mesh (tests/e2e/test_traffic_*.py):
- `drivers.make_driver(mesh, language)`: real calls to orders / pricing / inventory, whose own
  clients (Python, TypeScript, Go) call pricing / catalog / catalog; outcomes as their caller sees them.
- `channelz.server_calls(admin, port)`: calls started / succeeded / failed by an instance's server.
- `csds`: what an instance's xDS client has ACKed (routes by name, clusters, endpoints), to wait on.
- `istio_files.IstioFiles(mesh)`: VirtualServices and DestinationRules in the test mesh's folder, restored.
- `replicas.start_replica(procs, mesh, service, version, env)`: one more instance, as the runner starts them.
- `figures.Figures(feature)`: measured figures as a table and in `.run/traffic/*.json`.
- `traffic`: the fixtures (`driver` over the three client languages, `istio_files`, `make_figures`).

Fixtures (tests/conftest.py): `procs`, `consul_agent`; a failing test shows their log tails.
"""
