// The TypeScript conformance probe: polymesh.conformance.v1.ConformanceService on @polymesh/runtime,
// so that tests/conformance can check docs/runtime-contract.md against a real TypeScript instance.
import { runService } from '@polymesh/runtime/run';

runService({
  name: 'conformance',
  setup: async (env) => (await import('./probe')).setup(env),
});
