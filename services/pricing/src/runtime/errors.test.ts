import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  decodeBadRequest,
  decodeErrorInfo,
  decodeStatus,
  encodeBadRequest,
  encodeErrorInfo,
  encodeStatus,
} from './errors';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// Golden bytes worked out by hand from google/rpc/{status,error_details}.proto, so the encoder is
// checked against the wire format and not only against our own decoder.
test('google.rpc messages encode to the expected wire bytes', () => {
  // BadRequest{field_violations: [{field: "a", description: "b"}]}
  assert.equal(hex(encodeBadRequest([{ field: 'a', description: 'b' }])), '0a060a0161120162');
  // Status{code: 3, message: "m", details: [Any{type_url: "t", value: 0x01}]}
  assert.equal(hex(encodeStatus({ code: 3, message: 'm', details: [{ typeUrl: 't', value: Uint8Array.of(1) }] })), '080312016d1a060a0174120101');
  // ErrorInfo{reason: "R", domain: "d", metadata: {k: "v"}}
  assert.equal(hex(encodeErrorInfo({ reason: 'R', domain: 'd', metadata: { k: 'v' } })), '0a01521201641a060a016b120176');
});

test('decoding inverts encoding', () => {
  const violations = [
    { field: 'items[0].quantity', description: 'must be at least 1, got 0' },
    { field: 'currency_code', description: 'unknown currency "XYZ"' },
  ];
  assert.deepEqual(decodeBadRequest(encodeBadRequest(violations)), violations);
  const info = { reason: 'PRODUCT_NOT_FOUND', domain: 'catalog.shop.local', metadata: { product_id: 'x', other: 'y' } };
  assert.deepEqual(decodeErrorInfo(encodeErrorInfo(info)), info);
  const status = { code: 5, message: 'not found', details: [{ typeUrl: 'type.googleapis.com/google.rpc.ErrorInfo', value: encodeErrorInfo(info) }] };
  const decoded = decodeStatus(encodeStatus(status));
  assert.equal(decoded.code, 5);
  assert.equal(decoded.message, 'not found');
  assert.equal(decoded.details[0].typeUrl, status.details[0].typeUrl);
  assert.equal(hex(decoded.details[0].value), hex(status.details[0].value));
});
