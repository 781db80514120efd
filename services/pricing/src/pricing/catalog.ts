// Base prices come from the catalog's BatchGetProducts. The service sees only the small
// PriceSource interface, so unit tests put a fake behind it.
import type { ServiceError as CallError } from '@grpc/grpc-js';
import { status as Code } from '@grpc/grpc-js';
import { detailsOf, isCallError, notFound, RESOURCE_IDS_KEY } from '@polymesh/runtime';
import type { Money } from '../../../../gen/ts/google/type/money';
import type { BatchGetProductsResponse, CatalogServiceClient } from '../../../../gen/ts/shop/catalog/v1/catalog';

export interface PriceSource {
  /** USD base prices in the order of `productIds` (duplicates answered in place). */
  basePricesUsd(productIds: readonly string[]): Promise<Money[]>;
}

/**
 * The catalog's NOT_FOUND as pricing's own: same message, the ids the catalog named in its
 * ErrorInfo's one metadata key, `resource_ids` (docs/runtime-contract.md, "Errors").
 */
function productsNotFound(err: CallError, serviceName: string) {
  const info = detailsOf(err).find((d) => d.kind === 'ErrorInfo');
  const ids = info?.kind === 'ErrorInfo' ? info.value.metadata[RESOURCE_IDS_KEY] : undefined;
  return notFound(err.details, 'PRODUCT_NOT_FOUND', `${serviceName}.shop.local`, ids === undefined ? {} : { [RESOURCE_IDS_KEY]: ids });
}

export class CatalogPriceSource implements PriceSource {
  /** `client` comes from the runtime's dial(): deadline and cancellation follow the incoming call. */
  constructor(
    private readonly client: CatalogServiceClient,
    private readonly serviceName: string,
  ) {}

  async basePricesUsd(productIds: readonly string[]): Promise<Money[]> {
    const response = await new Promise<BatchGetProductsResponse>((resolve, reject) => {
      this.client.batchGetProducts({ ids: [...productIds] }, (err, res) => (err ? reject(err) : resolve(res)));
    }).catch((err: unknown) => {
      // Other codes are left to the runtime: UNAVAILABLE, DEADLINE_EXCEEDED... pass through, the rest is INTERNAL.
      if (isCallError(err) && err.code === Code.NOT_FOUND) throw productsNotFound(err, this.serviceName);
      throw err;
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
}
