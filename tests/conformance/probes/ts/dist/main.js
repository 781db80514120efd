'use strict';
// Written by mesh-write-entry (mesh/runtime-ts/scripts/write-entry.js).
require('./tests/conformance/probes/ts/src/main.js');
