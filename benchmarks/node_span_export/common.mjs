// Paths shared by the three processes of the benchmark. Everything is loaded from the pricing
// workspace's install (the root node_modules of the npm workspaces) and build (`make build-ts`):
// its generated catalog code and the TypeScript runtime's tracing.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const PRICING = path.join(ROOT, 'services', 'pricing');
export const DIST = path.join(PRICING, 'dist');
/** require() resolving from services/pricing (the workspace's node_modules, its dist). */
export const requirePricing = createRequire(path.join(PRICING, 'package.json'));
export const CATALOG_GEN = path.join(DIST, 'gen', 'ts', 'shop', 'catalog', 'v1', 'catalog.js');
export const TRACING = path.join(ROOT, 'mesh', 'runtime-ts', 'dist', 'mesh', 'runtime-ts', 'src', 'tracing.js');
