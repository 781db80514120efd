// A minimal state-of-the-world ADS server for tests: it serves only server-side Listener resources
// (what an XdsServer asks for), so a business server can be brought to SERVING without the real
// control plane. Not a control plane: no RDS/CDS/EDS, no versioning beyond "changed names".
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { bindAsync, hostPort } from '../runtime/net';

const LDS_TYPE_URL = 'type.googleapis.com/envoy.config.listener.v3.Listener';
const SERVER_LISTENER_PREFIX = 'grpc/server?xds.resource.listening_address=';

// The envoy/xds protos grpc-js-xds ships for itself.
const XDS_DEPS = path.join(path.dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');

function loadAds(): grpc.ServiceDefinition {
  const definition = protoLoader.loadSync(
    [
      'envoy/service/discovery/v3/ads.proto',
      'envoy/config/listener/v3/listener.proto',
      'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
      'envoy/extensions/filters/http/router/v3/router.proto',
    ],
    {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: false,
      oneofs: true,
      includeDirs: ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => path.join(XDS_DEPS, d)),
    },
  );
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    envoy: { service: { discovery: { v3: { AggregatedDiscoveryService: { service: grpc.ServiceDefinition } } } } };
  };
  return pkg.envoy.service.discovery.v3.AggregatedDiscoveryService.service;
}

/** The inbound listener gRPC expects for a server bound to host:port (plaintext, router only). */
export function serverListener(host: string, port: number): Record<string, unknown> {
  return {
    // protobufjs packs an object with '@type' into google.protobuf.Any.
    '@type': LDS_TYPE_URL,
    name: SERVER_LISTENER_PREFIX + hostPort(host, port),
    address: { socket_address: { address: host, port_value: port } },
    filter_chains: [
      {
        name: 'inbound',
        filters: [
          {
            name: 'envoy.filters.network.http_connection_manager',
            typed_config: {
              '@type':
                'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
              stat_prefix: 'inbound',
              route_config: {
                name: 'inbound',
                virtual_hosts: [
                  { name: 'inbound', domains: ['*'], routes: [{ match: { prefix: '' }, non_forwarding_action: {} }] },
                ],
              },
              http_filters: [
                {
                  name: 'envoy.filters.http.router',
                  typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' },
                },
              ],
            },
          },
        ],
      },
    ],
  };
}

interface DiscoveryRequest {
  type_url: string;
  resource_names: string[];
  response_nonce?: string;
  error_detail?: { message?: string } | null;
}

export class FakeAds {
  private readonly server = new grpc.Server();
  private nonce = 0;
  /** LDS names requested so far, and NACK messages received. */
  readonly requested = new Set<string>();
  readonly nacks: string[] = [];
  port = 0;

  /** `answer` false: accept the stream and never send a listener (a control plane that is late). */
  constructor(private readonly answer = true) {}

  async start(): Promise<void> {
    this.server.addService(loadAds(), {
      StreamAggregatedResources: (stream: grpc.ServerDuplexStream<DiscoveryRequest, unknown>) => {
        let lastNames = '';
        stream.on('data', (req: DiscoveryRequest) => {
          if (req.error_detail?.message) this.nacks.push(req.error_detail.message);
          if (req.type_url !== LDS_TYPE_URL) return;
          for (const n of req.resource_names) this.requested.add(n);
          if (!this.answer) return;
          const names = [...req.resource_names].sort();
          const key = names.join('\n');
          if (key === lastNames) return; // an ACK (or NACK) of what was sent
          lastNames = key;
          const resources = names
            .filter((n) => n.startsWith(SERVER_LISTENER_PREFIX))
            .map((n) => {
              const address = n.slice(SERVER_LISTENER_PREFIX.length);
              const match = /^\[?([^\]]+?)\]?:(\d+)$/.exec(address);
              return match ? serverListener(match[1], Number(match[2])) : undefined;
            })
            .filter((r) => r !== undefined);
          this.nonce += 1;
          stream.write({ version_info: String(this.nonce), type_url: LDS_TYPE_URL, nonce: String(this.nonce), resources });
        });
        stream.on('end', () => stream.end());
        stream.on('error', () => undefined);
      },
    });
    this.port = await bindAsync(this.server, '127.0.0.1:0', grpc.ServerCredentials.createInsecure());
  }

  /** A bootstrap document pointing at this server. */
  bootstrap(nodeId: string, cluster: string): Record<string, unknown> {
    return {
      xds_servers: [
        { server_uri: `127.0.0.1:${this.port}`, channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] },
      ],
      node: { id: nodeId, cluster },
      server_listener_resource_name_template: `${SERVER_LISTENER_PREFIX}%s`,
    };
  }

  stop(): void {
    this.server.forceShutdown();
  }
}
