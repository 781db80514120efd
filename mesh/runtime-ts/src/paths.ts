// Where the repository's .proto sources are (reflection loads them at start), found from this
// package's own location: mesh/runtime-ts sits two levels below the repository root.
import * as fs from 'node:fs';
import * as path from 'node:path';

function findPackageRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

/** mesh/runtime-ts, whether this file runs from src/ or from dist/mesh/runtime-ts/src/. */
export const RUNTIME_PACKAGE_ROOT = findPackageRoot(__dirname);
export const REPO_ROOT = path.resolve(RUNTIME_PACKAGE_ROOT, '..', '..');
/** buf's two modules: our contracts and the vendored Google types they import. */
export const PROTO_INCLUDE_DIRS: readonly string[] = Object.freeze([
  path.join(REPO_ROOT, 'protos'),
  path.join(REPO_ROOT, 'third_party', 'protos'),
]);
