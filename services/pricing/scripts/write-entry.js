// tsc compiles from the repository root (to include gen/ts), so the entry point lands at
// dist/services/pricing/src/main.js; this writes the stable dist/main.js that `npm start` and the
// local runner (mesh/runner) run.
const fs = require('node:fs');
const path = require('node:path');

const dist = path.join(__dirname, '..', 'dist');
fs.writeFileSync(
  path.join(dist, 'main.js'),
  "'use strict';\n// Written by scripts/write-entry.js.\nrequire('./services/pricing/src/main.js');\n",
);
