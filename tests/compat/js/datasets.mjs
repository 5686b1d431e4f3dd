// The official Apify JS client (apify-client on npm), unmodified, against openkvs's datasets.
// Env: OPENKVS_URL (the server, no /v2), OPENKVS_TOKEN. Exits non-zero on the first mismatch.
import assert from 'node:assert/strict';
import { ApifyClient } from 'apify-client';

const client = new ApifyClient({
    baseUrl: process.env.OPENKVS_URL,
    publicBaseUrl: process.env.OPENKVS_URL,
    token: process.env.OPENKVS_TOKEN,
    maxRetries: 0,
});

const name = `js-datasets-${Date.now()}`;
const created = await client.datasets().getOrCreate(name);
assert.equal(created.name, name);
assert.equal(created.itemCount, 0);
assert.equal((await client.datasets().getOrCreate(name)).id, created.id);
const ds = client.dataset(created.id);

await ds.pushItems({ n: 0, '#hidden': true });
await ds.pushItems(Array.from({ length: 1500 }, (_, i) => ({ n: i + 1, text: 'ü'.repeat(i % 3) })));
const info = await ds.get();
assert.equal(info.itemCount, 1501);
assert.equal(info.cleanItemCount, 1501);

const page = await ds.listItems({ offset: 10, limit: 5 });
assert.deepEqual(page.items.map((it) => it.n), [10, 11, 12, 13, 14]);
assert.equal(page.total, 1501);
assert.equal(page.offset, 10);
assert.equal(page.count, 5);
const newest = await ds.listItems({ limit: 2, desc: true });
assert.deepEqual(newest.items.map((it) => it.n), [1500, 1499]);
assert.equal(newest.desc, true);
const picked = await ds.listItems({ limit: 2, fields: ['n'], clean: true });
assert.deepEqual(picked.items, [{ n: 0 }, { n: 1 }]);

const csv = (await ds.downloadItems('csv', { limit: 2, fields: ['n', 'text'] })).toString('utf8');
assert.equal(csv, '\ufeffn,text\r\n0,\r\n1,\r\n'); // item 0 has no text; item 1's is ''
const jsonl = (await ds.downloadItems('jsonl', { offset: 1499 })).toString('utf8');
assert.equal(jsonl, '{"n":1499,"text":"ü"}\n{"n":1500,"text":"üü"}\n');
const xlsx = await ds.downloadItems('xlsx', { limit: 3 });
assert.equal(xlsx.subarray(0, 2).toString('latin1'), 'PK');

const url = await ds.createItemsPublicUrl({ limit: 1 });
const anon = await fetch(url);
assert.equal(anon.status, 200);
assert.deepEqual(await anon.json(), [{ n: 0, '#hidden': true }]);

await ds.delete();
assert.equal(await ds.get(), undefined, 'a deleted dataset is undefined');
console.log('DATASETS OK');
