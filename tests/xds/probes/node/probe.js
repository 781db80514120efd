// Calls shop.catalog.v1.CatalogService/GetProduct on an xds:/// target over and over and prints
// one JSON line per call: {"t": <unix seconds>, "backend": "<product name>"} or {"t", "error"}.
// The test backends answer with their own id as the product name.
// usage: node probe.js --target xds:///NAME:PORT [--interval-ms 10] [--header NAME=VALUE ...]
'use strict';
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const xds = require('@grpc/grpc-js-xds');
const protoLoader = require('@grpc/proto-loader');

xds.register();

const args = process.argv.slice(2);
const opt = { target: '', intervalMs: 10, headers: [] };
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--target') opt.target = args[++i];
  else if (args[i] === '--interval-ms') opt.intervalMs = Number(args[++i]);
  else if (args[i] === '--header') opt.headers.push(args[++i].split('='));
  else throw new Error(`unknown argument ${args[i]}`);
}

const root = path.resolve(__dirname, '../../../..');
const definition = protoLoader.loadSync('shop/catalog/v1/catalog.proto', {
  includeDirs: [path.join(root, 'protos'), path.join(root, 'third_party/protos')],
});
const { CatalogService } = grpc.loadPackageDefinition(definition).shop.catalog.v1;
const client = new CatalogService(opt.target, new xds.XdsChannelCredentials(grpc.credentials.createInsecure()));

let running = true;
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => { running = false; });

const metadata = new grpc.Metadata();
for (const [name, value] of opt.headers) metadata.add(name, value);

function getProduct() {
  return new Promise((resolve) => {
    client.getProduct({ id: 'probe' }, metadata, { deadline: Date.now() + 1000 }, (err, resp) => resolve({ err, resp }));
  });
}

(async () => {
  while (running) {
    const { err, resp } = await getProduct();
    const line = { t: Date.now() / 1000 };
    if (err) line.error = `${grpc.status[err.code]}: ${err.details}`;
    else line.backend = resp.product.name;
    process.stdout.write(`${JSON.stringify(line)}\n`);
    await new Promise((r) => setTimeout(r, opt.intervalMs));
  }
  client.close();
  process.exit(0); // the xDS client's ADS stream would keep the event loop alive
})();
