#!/usr/bin/env node
// tsc compiles each package from the repository root (so that gen/ts is compiled along), which puts
// a package's entry point deep inside dist/ (dist/services/pricing/src/main.js). This writes the
// stable dist/main.js that `npm start` and the local runner run. Usage, from a package directory:
//   mesh-write-entry src/main.ts
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const source = process.argv[2];
if (!source || !source.endsWith('.ts')) {
  process.stderr.write('usage: mesh-write-entry src/main.ts\n');
  process.exit(2);
}
const repoRoot = path.resolve(__dirname, '..', '..', '..');
const pkg = process.cwd();
const compiled = path.join(path.relative(repoRoot, pkg), source).replace(/\.ts$/, '.js').split(path.sep).join('/');
const dist = path.join(pkg, 'dist');
fs.mkdirSync(dist, { recursive: true });
fs.writeFileSync(
  path.join(dist, 'main.js'),
  `'use strict';\n// Written by mesh-write-entry (mesh/runtime-ts/scripts/write-entry.js).\nrequire('./${compiled}');\n`,
);
