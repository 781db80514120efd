// Base prices come from the catalog's BatchGetProducts. The service sees only the small
// PriceSource interface, so unit tests put a fake behind it.
import { credentials, Metadata, status as Code, type ChannelCredentials, type ServiceError } from '@grpc/grpc-js';
import type { Money } from '../../../../gen/ts/google/type/money';
import { CatalogServiceClient, type BatchGetProductsResponse } from '../../../../gen/ts/shop/catalog/v1/catalog';
import { isServiceError, passThrough } from '../runtime/errors';
import { xdsChannelCredentials } from '../runtime/xds';

export interface PriceSource {
  /** USD base prices in the order of `productIds` (duplicates answered in place). */
  basePricesUsd(productIds: readonly string[], deadline: Date): Promise<Money[]>;
  close(): void;
}

export const CATALOG_TARGET = 'xds:///catalog';

/** Catalog codes a caller can act on keep their code; anything else is unexpected (INTERNAL). */
const PASSED_THROUGH = new Set<Code>([Code.NOT_FOUND, Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED]);

export class CatalogPriceSource implements PriceSource {
  constructor(private readonly client: CatalogServiceClient) {}

  /** A client of `target` (xds:///catalog in the mesh) with xDS credentials, insecure fallback. */
  static overXds(target = CATALOG_TARGET, creds: ChannelCredentials = xdsChannelCredentials()): CatalogPriceSource {
    return new CatalogPriceSource(new CatalogServiceClient(target, creds));
  }

  /** A plain client, for tests against a local catalog. */
  static direct(address: string): CatalogPriceSource {
    return new CatalogPriceSource(new CatalogServiceClient(address, credentials.createInsecure()));
  }

  async basePricesUsd(productIds: readonly string[], deadline: Date): Promise<Money[]> {
    const response = await new Promise<BatchGetProductsResponse>((resolve, reject) => {
      this.client.batchGetProducts({ ids: [...productIds] }, new Metadata(), { deadline }, (err: ServiceError | null, res) =>
        err ? reject(err) : resolve(res),
      );
    }).catch((err: unknown) => {
      if (isServiceError(err) && PASSED_THROUGH.has(err.code)) throw passThrough(err);
      throw new Error(`catalog BatchGetProducts failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    });
    if (response.products.length !== productIds.length) {
      throw new Error(`catalog returned ${response.products.length} products for ${productIds.length} ids`);
    }
    return response.products.map((product, i) => {
      if (product.id !== productIds[i]) {
        throw new Error(`catalog answered ${product.id} in place of ${productIds[i]}`);
      }
      const price = product.priceUsd;
      if (!price || (price.currencyCode !== 'USD' && price.currencyCode !== '')) {
        throw new Error(`catalog price of ${product.id} is not in USD: ${JSON.stringify(price)}`);
      }
      return price;
    });
  }

  close(): void {
    this.client.close();
  }
}
