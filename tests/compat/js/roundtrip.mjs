// The official Apify JS client (apify-client on npm), unmodified, against openkvs.
// Env: OPENKVS_URL (the server, no /v2), OPENKVS_TOKEN. Exits non-zero on the first mismatch.
import assert from 'node:assert/strict';
import { ApifyClient } from 'apify-client';

const client = new ApifyClient({
    baseUrl: process.env.OPENKVS_URL,
    publicBaseUrl: process.env.OPENKVS_URL, // for getRecordPublicUrl(); defaults to https://api.apify.com
    token: process.env.OPENKVS_TOKEN,
    maxRetries: 0,
});

const name = `js-roundtrip-${Date.now()}`;
const created = await client.keyValueStores().getOrCreate(name);
assert.equal(created.name, name);
assert.match(created.id, /^[a-zA-Z0-9]{17}$/);
assert.ok(created.createdAt instanceof Date, 'createdAt is parsed as a Date');
const again = await client.keyValueStores().getOrCreate(name);
assert.equal(again.id, created.id, 'getOrCreate by name returns the same store');

const store = client.keyValueStore(created.id);
assert.equal((await store.get()).id, created.id);

// JSON, text and binary records.
await store.setRecord({ key: 'item-json', value: { hello: 'world', n: [1, 2, 3] } });
await store.setRecord({ key: 'item-text', value: 'plain text ✓', contentType: 'text/plain; charset=utf-8' });
const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
await store.setRecord({ key: 'other-bin', value: bytes, contentType: 'application/octet-stream' });

const json = await store.getRecord('item-json');
assert.deepEqual(json.value, { hello: 'world', n: [1, 2, 3] });
assert.match(json.contentType, /^application\/json/);
const text = await store.getRecord('item-text');
assert.equal(text.value, 'plain text ✓');
assert.match(text.contentType, /^text\/plain/);
const bin = await store.getRecord('other-bin', { buffer: true });
assert.ok(Buffer.isBuffer(bin.value), 'binary record comes back as a Buffer');
assert.ok(bytes.equals(bin.value), 'binary record round-trips byte for byte');
assert.equal(await store.getRecord('missing-key'), undefined, 'a missing record is undefined');
assert.equal(await store.recordExists('item-json'), true);
assert.equal(await store.recordExists('missing-key'), false);

// Keys: all, with a prefix, and paginated.
const all = await store.listKeys();
assert.deepEqual(all.items.map((i) => i.key), ['item-json', 'item-text', 'other-bin']);
assert.equal(all.isTruncated, false);
const prefixed = await store.listKeys({ prefix: 'item-' });
assert.deepEqual(prefixed.items.map((i) => i.key), ['item-json', 'item-text']);
const page = await store.listKeys({ limit: 1 });
assert.equal(page.items.length, 1);
assert.equal(page.isTruncated, true);
assert.equal(page.nextExclusiveStartKey, 'item-json');
const rest = await store.listKeys({ exclusiveStartKey: page.nextExclusiveStartKey });
assert.deepEqual(rest.items.map((i) => i.key), ['item-text', 'other-bin']);
assert.equal(all.items.find((i) => i.key === 'other-bin').size, 256);

// Public URL of a record works without a token.
const publicUrl = await store.getRecordPublicUrl('item-text');
assert.ok(publicUrl.startsWith(`${process.env.OPENKVS_URL}/v2/key-value-stores/${created.id}/records/item-text`), publicUrl);
const res = await fetch(publicUrl);
assert.equal(res.status, 200);
assert.equal(await res.text(), 'plain text ✓');

// Delete a record, then the store.
await store.deleteRecord('item-text');
assert.equal(await store.getRecord('item-text'), undefined);
assert.deepEqual((await store.listKeys()).items.map((i) => i.key), ['item-json', 'other-bin']);
await store.delete();
assert.equal(await store.get(), undefined, 'a deleted store is gone');

console.log('ROUNDTRIP OK');
