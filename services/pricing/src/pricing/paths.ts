// Where the package and the repository's .proto sources are, from the compiled file's location
// (dist/services/pricing/src/...) or the source's (src/...): the first package.json going up.
import * as fs from 'node:fs';
import * as path from 'node:path';

function findPackageRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

export const PACKAGE_ROOT = findPackageRoot(__dirname);
export const REPO_ROOT = path.resolve(PACKAGE_ROOT, '..', '..');
/** buf's two modules: our contracts and the vendored Google types they import. */
export const PROTO_INCLUDE_DIRS = [path.join(REPO_ROOT, 'protos'), path.join(REPO_ROOT, 'third_party', 'protos')];
