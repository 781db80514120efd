// Paths shared by the three processes of the benchmark. Everything is loaded from the pricing
// service's own install (services/pricing/node_modules) and build (services/pricing/dist).
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const PRICING = path.join(ROOT, 'services', 'pricing');
export const DIST = path.join(PRICING, 'dist');
/** require() resolving from services/pricing (its node_modules, its dist). */
export const requirePricing = createRequire(path.join(PRICING, 'package.json'));
export const CATALOG_GEN = path.join(DIST, 'gen', 'ts', 'shop', 'catalog', 'v1', 'catalog.js');
export const TRACING = path.join(DIST, 'services', 'pricing', 'src', 'runtime', 'tracing.js');
