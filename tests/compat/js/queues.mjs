// The official Apify JS client (apify-client on npm), unmodified, driving a request queue as a crawler does:
// open by name, add and batch add (dedupe by uniqueKey), take the head with locks from two clients, prolong,
// release, mark handled, reclaim, list, batch delete, unlock, delete the queue.
// Env: OPENKVS_URL (the server, no /v2), OPENKVS_TOKEN. Exits non-zero on the first mismatch.
import assert from 'node:assert/strict';
import { ApifyClient } from 'apify-client';

const client = new ApifyClient({ baseUrl: process.env.OPENKVS_URL, token: process.env.OPENKVS_TOKEN, maxRetries: 0 });

const name = `js-queue-${Date.now()}`;
const created = await client.requestQueues().getOrCreate(name);
assert.equal(created.name, name);
assert.equal((await client.requestQueues().getOrCreate(name)).id, created.id, 'named getOrCreate is idempotent');
const a = client.requestQueue(created.id, { clientKey: 'crawler-a' });
const b = client.requestQueue(created.id, { clientKey: 'crawler-b' });

// Adds: one, a batch with a duplicate of it, then the same batch again.
const first = await a.addRequest({ url: 'http://example.com', uniqueKey: 'http://example.com' });
assert.equal(first.wasAlreadyPresent, false);
assert.equal(first.requestId, '8OamqXBCpPHxyH9', 'the ID derived from the uniqueKey (contract section 1)');
const urls = Array.from({ length: 30 }, (_, i) => `https://example.com/page/${i}`);
const batch = urls.map((url) => ({ url, uniqueKey: url, userData: { label: 'PAGE' } }));
const added = await a.batchAddRequests([{ url: 'http://example.com', uniqueKey: 'http://example.com' }, ...batch]);
assert.equal(added.unprocessedRequests.length, 0);
assert.equal(added.processedRequests.length, 31, 'the client splits 31 requests into batches of 25');
assert.equal(added.processedRequests.filter((p) => p.wasAlreadyPresent).length, 1);
const again = await b.batchAddRequests(batch);
assert.ok(again.processedRequests.every((p) => p.wasAlreadyPresent), 'a second batch add dedupes every request');
let queue = await a.get();
assert.equal(queue.totalRequestCount, 31);
assert.equal(queue.pendingRequestCount, 31);

// Peek without locking, then two crawlers lock disjoint parts of the head.
const peek = await a.listHead({ limit: 5 });
assert.equal(peek.items.length, 5);
assert.equal(peek.items[0].url, 'http://example.com');
const lockedA = await a.listAndLockHead({ lockSecs: 60, limit: 10 });
assert.equal(lockedA.items.length, 10);
assert.equal(lockedA.clientKey, 'crawler-a');
assert.equal(lockedA.lockSecs, 60);
const lockedB = await b.listAndLockHead({ lockSecs: 60, limit: 25 });
assert.equal(lockedB.items.length, 21);
const idsA = new Set(lockedA.items.map((i) => i.id));
assert.ok(lockedB.items.every((i) => !idsA.has(i.id)), 'no request is handed to two clients');
assert.equal((await a.listAndLockHead({ lockSecs: 60, limit: 25 })).items.length, 0, 'everything is locked');

// Prolong one's own lock; another client's lock is refused.
const mine = lockedA.items[0];
const prolonged = await a.prolongRequestLock(mine.id, { lockSecs: 120 });
assert.ok(prolonged.lockExpiresAt instanceof Date && prolonged.lockExpiresAt > new Date());
await assert.rejects(b.prolongRequestLock(mine.id, { lockSecs: 10 }), (err) => err.statusCode === 400);

// Handle A's requests: GET each in full, mark it handled (the second mark is already handled).
for (const item of lockedA.items) {
    const full = await a.getRequest(item.id);
    assert.equal(full.id, item.id);
    assert.equal(full.url, item.url);
    const marked = await a.updateRequest({ ...full, handledAt: new Date().toISOString() });
    assert.equal(marked.wasAlreadyHandled, false);
}
const twice = await a.updateRequest({ ...(await a.getRequest(mine.id)), handledAt: new Date().toISOString() });
assert.equal(twice.wasAlreadyHandled, true);

// B gives one back to the front (reclaim), releases the rest with unlock.
const reclaimed = lockedB.items[0];
await b.deleteRequestLock(reclaimed.id, { forefront: true });
const unlocked = await b.unlockRequests();
assert.equal(unlocked.unlockedCount, 20);
const head = await a.listHead({ limit: 1 });
assert.equal(head.items[0].id, reclaimed.id, 'a reclaimed request with forefront is at the head');

// List every request with the cursor, delete two with a batch delete and one alone.
const listed = [];
for await (const r of a.paginateRequests({ maxPageLimit: 7 })) listed.push(...r.items);
assert.equal(listed.length, 31);
assert.equal(new Set(listed.map((r) => r.id)).size, 31);
// (two of B's, pending: the client sends batches of 25 in parallel, so the head order across batches is not fixed)
const deleted = await a.batchDeleteRequests([{ uniqueKey: lockedB.items[1].uniqueKey }, { id: lockedB.items[2].id }]);
assert.equal(deleted.processedRequests.length, 2);
await a.deleteRequest(reclaimed.id);
assert.equal(await a.getRequest(reclaimed.id), undefined, 'a deleted request is undefined');
queue = await a.get();
assert.equal(queue.totalRequestCount, 28);
assert.equal(queue.handledRequestCount, 10);
assert.equal(queue.pendingRequestCount, 18);
assert.equal(queue.hadMultipleClients, true);

// Rename, then delete; a missing queue is undefined.
const renamed = await a.update({ name: `${name}-2` });
assert.equal(renamed.name, `${name}-2`);
await a.delete();
assert.equal(await a.get(), undefined);
console.log('QUEUES OK');
