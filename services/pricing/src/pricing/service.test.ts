// PricingService through real grpc-js servers on 127.0.0.1:0: a plain grpc.Server for pricing,
// a fake catalog (a real CatalogService server, or a PriceSource fake) behind it.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { Money } from '../../../../gen/ts/google/type/money';
import {
  CatalogServiceService,
  type BatchGetProductsRequest,
  type BatchGetProductsResponse,
  CatalogServiceClient,
  type CatalogServiceServer,
  type Product,
} from '../../../../gen/ts/shop/catalog/v1/catalog';
import {
  PricingServiceClient,
  PricingServiceService,
  type GetQuoteRequest,
  type GetQuoteResponse,
  type ListCurrenciesResponse,
} from '../../../../gen/ts/shop/pricing/v1/pricing';
import { detailsOf, Logger, notFound, type Detail } from '@polymesh/runtime';
import { CatalogPriceSource, type PriceSource } from './catalog';
import { getQuote, pricingService } from './service';

/** The field violations of the one BadRequest among `details`. */
function badRequest(details: Detail[]) {
  const found = details.filter((d) => d.kind === 'BadRequest');
  assert.equal(found.length, 1, 'one BadRequest');
  return found[0].kind === 'BadRequest' ? found[0].value.fieldViolations : [];
}

const usd = (units: number, nanos = 0): Money => ({ currencyCode: 'USD', units, nanos });
const PRODUCTS: Record<string, Product> = {
  'sku-cup': { id: 'sku-cup', name: 'Cup', description: '', priceUsd: usd(12, 990_000_000) },
  'sku-beans': { id: 'sku-beans', name: 'Beans', description: '', priceUsd: usd(19, 990_000_000) },
  'sku-euro': { id: 'sku-euro', name: 'Odd', description: '', priceUsd: { currencyCode: 'EUR', units: 1, nanos: 0 } },
};

/** A real CatalogService: NOT_FOUND with ErrorInfo naming every unknown id, like the catalog's contract. */
const fakeCatalog: CatalogServiceServer = {
  listProducts: (_call, cb) => cb({ code: grpc.status.UNIMPLEMENTED }),
  getProduct: (_call, cb) => cb({ code: grpc.status.UNIMPLEMENTED }),
  batchGetProducts: (call: grpc.ServerUnaryCall<BatchGetProductsRequest, BatchGetProductsResponse>, cb) => {
    const unknown = call.request.ids.filter((id) => !(id in PRODUCTS));
    if (unknown.length > 0) {
      cb(
        notFound(`unknown products: ${unknown.join(', ')}`, 'PRODUCT_NOT_FOUND', 'catalog.shop.local', {
          resource_ids: unknown.join(','),
        }).toStatus(),
      );
      return;
    }
    cb(null, { products: call.request.ids.map((id) => PRODUCTS[id]) });
  },
};

class Harness {
  readonly servers: grpc.Server[] = [];
  readonly logLines: Record<string, unknown>[] = [];
  readonly logger = new Logger({
    serviceName: 'pricing',
    instanceId: 'pricing-test',
    level: 'debug',
    write: (line) => this.logLines.push(JSON.parse(line) as Record<string, unknown>),
  });

  async serve(definition: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation): Promise<string> {
    const server = new grpc.Server();
    server.addService(definition, impl);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    this.servers.push(server);
    return `127.0.0.1:${port}`;
  }

  async pricing(prices: PriceSource, version = 'v1', promotionPercent = 0): Promise<PricingServiceClient> {
    const pricing = pricingService(prices, { version, promotionPercent });
    const address = await this.serve(PricingServiceService, pricing.implement(this.logger));
    return new PricingServiceClient(address, grpc.credentials.createInsecure());
  }

  stop(): void {
    for (const s of this.servers) s.forceShutdown();
  }
}

function call<Res>(fn: (cb: (err: grpc.ServiceError | null, res: Res) => void) => void) {
  return new Promise<{ err: grpc.ServiceError | null; res: Res }>((resolve) => fn((err, res) => resolve({ err, res })));
}

const quote = (client: PricingServiceClient, req: GetQuoteRequest) =>
  call<GetQuoteResponse>((cb) => client.getQuote(req, cb));

describe('PricingService over gRPC', () => {
  const h = new Harness();
  let v1: PricingServiceClient;
  let v2: PricingServiceClient;
  let catalog: CatalogPriceSource;
  let closeCatalog: () => void;

  before(async () => {
    const address = await h.serve(CatalogServiceService, fakeCatalog);
    const catalogClient = new CatalogServiceClient(address, grpc.credentials.createInsecure());
    catalog = new CatalogPriceSource(catalogClient, 'pricing');
    closeCatalog = () => catalogClient.close();
    v1 = await h.pricing(catalog);
    v2 = await h.pricing(catalog, 'v2', 10);
  });
  after(() => {
    v1.close();
    v2.close();
    closeCatalog();
    h.stop();
  });

  test('quotes in the requested currency, stamped with version and promotion', async () => {
    const { err, res } = await quote(v1, {
      currencyCode: 'EUR',
      items: [
        { productId: 'sku-cup', quantity: 3 },
        { productId: 'sku-beans', quantity: 1 },
        { productId: 'sku-cup', quantity: 1 },
      ],
    });
    assert.equal(err, null);
    const q = res.quote!;
    assert.equal(q.pricingVersion, 'v1');
    assert.equal(q.promotionPercent, 0);
    // 12.99 * 0.92 = 11.9508 -> 11.95; 19.99 * 0.92 = 18.3908 -> 18.39
    assert.deepEqual(
      q.lines.map((l) => [l.productId, l.quantity, l.unitPrice, l.lineTotal]),
      [
        ['sku-cup', 3, { currencyCode: 'EUR', units: 11, nanos: 950_000_000 }, { currencyCode: 'EUR', units: 35, nanos: 850_000_000 }],
        ['sku-beans', 1, { currencyCode: 'EUR', units: 18, nanos: 390_000_000 }, { currencyCode: 'EUR', units: 18, nanos: 390_000_000 }],
        ['sku-cup', 1, { currencyCode: 'EUR', units: 11, nanos: 950_000_000 }, { currencyCode: 'EUR', units: 11, nanos: 950_000_000 }],
      ],
    );
    assert.deepEqual(q.total, { currencyCode: 'EUR', units: 66, nanos: 190_000_000 });
  });

  test('v2 applies its promotion to every unit price', async () => {
    const { err, res } = await quote(v2, { currencyCode: 'USD', items: [{ productId: 'sku-beans', quantity: 2 }] });
    assert.equal(err, null);
    assert.equal(res.quote!.pricingVersion, 'v2');
    assert.equal(res.quote!.promotionPercent, 10);
    // 19.99 * 0.9 = 17.991 -> 17.99; x2 = 35.98
    assert.deepEqual(res.quote!.lines[0].unitPrice, { currencyCode: 'USD', units: 17, nanos: 990_000_000 });
    assert.deepEqual(res.quote!.total, { currencyCode: 'USD', units: 35, nanos: 980_000_000 });
  });

  test('JPY quotes have whole yen', async () => {
    const { res } = await quote(v1, { currencyCode: 'JPY', items: [{ productId: 'sku-cup', quantity: 2 }] });
    // 12.99 * 151.37 = 1966.2963 -> 1966; x2 = 3932
    assert.deepEqual(res.quote!.lines[0].unitPrice, { currencyCode: 'JPY', units: 1966, nanos: 0 });
    assert.deepEqual(res.quote!.total, { currencyCode: 'JPY', units: 3932, nanos: 0 });
  });

  test('INVALID_ARGUMENT lists every bad field as BadRequest violations', async () => {
    const { err } = await quote(v1, {
      currencyCode: 'XYZ',
      items: [
        { productId: 'sku-cup', quantity: 0 },
        { productId: '', quantity: 1 },
        { productId: '', quantity: -4 },
      ],
    });
    assert.ok(err);
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    const fields = badRequest(detailsOf(err)).map((v) => v.field);
    assert.match(err.details, /^invalid request: items\[0\]\.quantity: must be at least 1, got 0; items\[1\]\.product_id: /);
    assert.deepEqual(fields, [
      'items[0].quantity',
      'items[1].product_id',
      'items[2].product_id',
      'items[2].quantity',
      'currency_code',
    ]);
  });

  test('empty items and an empty currency are both reported', async () => {
    const { err } = await quote(v1, { currencyCode: '', items: [] });
    assert.equal(err?.code, grpc.status.INVALID_ARGUMENT);
    const violations = badRequest(detailsOf(err));
    assert.deepEqual(
      violations.map((v) => v.field),
      ['items', 'currency_code'],
    );
    assert.ok(violations.every((v) => v.description.length > 0));
  });

  test('an unknown product is NOT_FOUND naming the ids the catalog named', async () => {
    const { err } = await quote(v1, {
      currencyCode: 'EUR',
      items: [
        { productId: 'sku-cup', quantity: 1 },
        { productId: 'sku-nope', quantity: 1 },
      ],
    });
    assert.equal(err?.code, grpc.status.NOT_FOUND);
    assert.equal(err.details, 'unknown products: sku-nope');
    const [detail] = detailsOf(err);
    assert.equal(detail.kind, 'ErrorInfo');
    assert.deepEqual(detail.value, {
      reason: 'PRODUCT_NOT_FOUND',
      domain: 'pricing.shop.local',
      metadata: { resource_ids: 'sku-nope' },
    });
  });

  test('ListCurrencies returns the table’s codes sorted', async () => {
    const { err, res } = await call<ListCurrenciesResponse>((cb) => v1.listCurrencies({}, cb));
    assert.equal(err, null);
    assert.deepEqual(res.currencyCodes, ['AUD', 'CAD', 'CHF', 'EUR', 'GBP', 'JPY', 'USD']);
  });

  test('anything unexpected is INTERNAL "internal error" and logged', async () => {
    const broken: PriceSource = {
      basePricesUsd: () => Promise.reject(new Error('catalog exploded: secret detail')),
    };
    const client = await h.pricing(broken);
    const { err } = await quote(client, { currencyCode: 'USD', items: [{ productId: 'sku-cup', quantity: 1 }] });
    client.close();
    assert.equal(err?.code, grpc.status.INTERNAL);
    assert.equal(err.details, 'internal error');
    assert.equal(err.metadata.get('grpc-status-details-bin').length, 0);
    const logged = h.logLines.find((l) => l.message === 'unexpected error');
    assert.ok(logged);
    assert.equal(logged.severity, 'ERROR');
    assert.match(JSON.stringify(logged.error), /secret detail/);
  });

  test('a catalog price not in USD is unexpected (INTERNAL)', async () => {
    const { err } = await quote(v1, { currencyCode: 'USD', items: [{ productId: 'sku-euro', quantity: 1 }] });
    assert.equal(err?.code, grpc.status.INTERNAL);
    assert.equal(err.details, 'internal error');
  });
});

describe('getQuote arithmetic', () => {
  const fixed = (price: Money): PriceSource => ({ basePricesUsd: async (ids) => ids.map(() => price) });

  test('big quantities stay exact', async () => {
    const res = await getQuote(
      { currencyCode: 'USD', items: [{ productId: 'a', quantity: 2_147_483_647 }, { productId: 'b', quantity: 1 }] },
      fixed(usd(19, 990_000_000)),
      { version: 'v1', promotionPercent: 0 },
    );
    // 19.99 * 2147483647 = 42928198103.53
    assert.deepEqual(res.quote!.lines[0].lineTotal, { currencyCode: 'USD', units: 42_928_198_103, nanos: 530_000_000 });
    assert.deepEqual(res.quote!.total, { currencyCode: 'USD', units: 42_928_198_123, nanos: 520_000_000 });
  });

  test('a total beyond Money’s range is OUT_OF_RANGE, not a wrong number', async () => {
    await assert.rejects(
      getQuote(
        { currencyCode: 'JPY', items: [{ productId: 'a', quantity: 2_147_483_647 }] },
        fixed(usd(1_000_000_000_000)),
        { version: 'v1', promotionPercent: 0 },
      ),
      (err: { code?: number }) => err.code === grpc.status.OUT_OF_RANGE,
    );
  });
});
