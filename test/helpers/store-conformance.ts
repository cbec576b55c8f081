// One conformance suite every ClusterStore passes (architecture habit 10). `open` gives two
// handles on one backend (two nodes): for the embedded store two views on one hub, for NATS two
// connections to the same server with the same bucket prefix. Each subtest gets a fresh pair, so
// implementations must isolate them (the NATS case uses a new prefix per pair).
//
// No timing is asserted. Where "nothing arrives" must be shown, a later event on the same handle
// serves as the barrier, because both stores deliver in order per handle.

import type { Test } from 'tap';
import { StoreError } from '../../src/store/errors.ts';
import { subjectToken } from '../../src/store/keys.ts';
import { MAX_KEY_BYTES, MAX_VALUE_BYTES, type ClusterStore, type Entry, type WatchEvent } from '../../src/store/types.ts';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `pred` every 10 ms; fails after `timeoutMs` (a guard against hangs, not a threshold). */
export async function waitFor(pred: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    if (await pred()) return;
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

export type OpenPair = (t: Test) => Promise<readonly [ClusterStore, ClusterStore]>;

const WAIT = 15_000;

/** A watcher's events, and the state they add up to. */
export interface Recorder {
  readonly events: WatchEvent[];
  readonly state: Map<string, Entry>;
  off(): void;
}

export function record(store: ClusterStore, coll: Parameters<ClusterStore['watch']>[0]): Recorder {
  const events: WatchEvent[] = [];
  const state = new Map<string, Entry>();
  const off = store.watch(coll, (ev) => {
    events.push(ev);
    if (ev.type === 'sync') {
      state.clear();
      for (const [k, e] of ev.entries) state.set(k, e);
    } else if (ev.type === 'put') state.set(ev.entry.key, ev.entry);
    else state.delete(ev.key);
  });
  return { events, state, off };
}

function code(c: StoreError['code']): { code: StoreError['code'] } {
  return { code: c };
}

async function errorCode(p: Promise<unknown>): Promise<string | null> {
  return p.then(
    () => null,
    (e: unknown) => (e instanceof StoreError ? e.code : String(e)),
  );
}

/** Calls `fn` until it stops failing with `no-responder` (interest takes a moment to spread). */
async function untilServed<T>(fn: () => Promise<T>): Promise<T> {
  const end = Date.now() + WAIT;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof StoreError && err.code === 'no-responder') || Date.now() > end) throw err;
      await sleep(20);
    }
  }
}

export function runStoreConformance(t: Test, name: string, open: OpenPair): void {
  const pair = async (t: Test): Promise<readonly [ClusterStore, ClusterStore]> => {
    const p = await open(t);
    t.teardown(() => Promise.all(p.map((s) => s.close())).then(() => {}));
    return p;
  };

  t.test(`${name}: put, get, delete`, async (t) => {
    const [a, b] = await pair(t);
    t.ok(a.connected() && b.connected(), 'connected');
    const r1 = await a.put('apps', 'hello', { name: 'hello', toml: 'app = "hello"\n' });
    t.ok(r1 > 0, 'a revision');
    const got = await b.get('apps', 'hello');
    t.same(got, { key: 'hello', value: { name: 'hello', toml: 'app = "hello"\n' }, revision: r1 }, 'the other node reads it');
    t.ok(Object.isFrozen(got!.value), 'values are frozen');
    const r2 = await b.put('apps', 'hello', 'just text');
    t.ok(r2 > r1, 'revisions grow');
    t.same((await a.get('apps', 'hello'))?.value, 'just text');
    const rn = await a.put('apps', 'nothing', null);
    t.same(await a.get('apps', 'nothing'), { key: 'nothing', value: null, revision: rn }, 'null is a value');
    t.equal(await a.get('apps', 'absent'), null, 'absent key');
    t.equal(await a.get('machines', 'hello'), null, 'collections are separate');
    await a.delete('apps', 'hello');
    t.equal(await b.get('apps', 'hello'), null, 'deleted');
    await a.delete('apps', 'hello');
    t.pass('deleting an absent key is fine');
  });

  t.test(`${name}: create refuses an existing key`, async (t) => {
    const [a, b] = await pair(t);
    const r = await a.create('locks', 'k', { v: 1 });
    await t.rejects(b.create('locks', 'k', { v: 2 }), code('conflict'));
    t.same((await a.get('locks', 'k'))?.revision, r, 'unchanged');
    await b.delete('locks', 'k');
    t.ok((await b.create('locks', 'k', { v: 3 })) > r, 'create after delete');
    t.same((await a.get('locks', 'k'))?.value, { v: 3 });
  });

  t.test(`${name}: update and delete compare and set`, async (t) => {
    const [a, b] = await pair(t);
    const r1 = await a.put('machines', 'm1', { state: 'started' });
    const r2 = await b.update('machines', 'm1', { state: 'stopping' }, r1);
    t.ok(r2 > r1);
    await t.rejects(a.update('machines', 'm1', { state: 'lost' }, r1), code('conflict'), 'stale revision');
    t.same((await a.get('machines', 'm1'))?.value, { state: 'stopping' }, 'the loser changed nothing');
    await t.rejects(a.update('machines', 'absent', {}, r1), code('conflict'), 'absent key');
    await t.rejects(a.delete('machines', 'm1', r1), code('conflict'), 'stale delete');
    t.ok(await a.get('machines', 'm1'), 'still there');
    const w = record(a, 'machines');
    await waitFor(() => w.state.has('m1'), WAIT, 'the watcher to have m1');
    await a.delete('machines', 'm1', r2);
    t.equal(await b.get('machines', 'm1'), null, 'deleted with the right revision');
    // A delete has a revision too (NATS keeps a delete marker): "recreate only if it is still
    // the delete I saw" is a compare-and-set against it.
    await waitFor(() => w.events.some((e) => e.type === 'delete'), WAIT, 'the delete event');
    const del = w.events.find((e) => e.type === 'delete');
    const delRev = del?.type === 'delete' ? del.revision : 0;
    t.ok(delRev > r2, 'the delete has a newer revision');
    t.ok((await b.update('machines', 'm1', { state: 'recreated' }, delRev)) > delRev, 'update against the delete revision');
    await t.rejects(a.update('machines', 'm1', { state: 'lost' }, delRev), code('conflict'), 'only once');
    w.off();
  });

  t.test(`${name}: keys and list`, async (t) => {
    const [a, b] = await pair(t);
    t.same(await a.keys('nodes'), [], 'empty');
    t.same([...(await a.list('nodes'))], [], 'empty list');
    await a.put('nodes', 'n2', { region: 'fra' });
    await b.put('nodes', 'n1', { region: 'ams' });
    await a.put('nodes', 'n3', { region: 'ord' });
    await b.delete('nodes', 'n3');
    await a.put('certs', 'example.com', { pem: '...' });
    t.same(await b.keys('nodes'), ['n1', 'n2'], 'sorted, without deleted keys or other collections');
    const list = await a.list('nodes');
    t.same([...list.keys()], ['n1', 'n2']);
    t.same(list.get('n1')?.value, { region: 'ams' });
    t.same(list.get('n2')?.revision, (await a.get('nodes', 'n2'))?.revision);
  });

  t.test(`${name}: watch gives the whole state, then changes in order`, async (t) => {
    const [a, b] = await pair(t);
    await b.put('machines', 'm1', { n: 0 });
    await b.put('machines', 'm2', { n: 0 });
    const w = record(a, 'machines');
    t.equal(w.events.length, 0, 'never delivered synchronously');
    await waitFor(() => w.events.length > 0, WAIT, 'the initial sync');
    t.equal(w.events[0]!.type, 'sync');
    t.same([...w.state.keys()], ['m1', 'm2']);

    for (let i = 1; i <= 20; i++) await b.put('machines', 'm1', { n: i });
    await b.delete('machines', 'm2');
    await b.put('machines', 'm3', { n: 0 });
    await waitFor(() => w.state.has('m3'), WAIT, 'the changes');
    const m1 = w.events.flatMap((e) => (e.type === 'put' && e.entry.key === 'm1' ? [e.entry] : []));
    // In order and ending at the newest; intermediate values may be skipped (types.ts: NATS keeps
    // one value per key, and one replaced before the server delivered it is gone).
    const ns = m1.map((e) => (e.value as { n: number }).n);
    t.ok(ns.every((n, i) => i === 0 || n > ns[i - 1]!), `values in order (${ns.length} of 20 delivered)`);
    t.equal(ns.at(-1), 20, 'the newest value arrives');
    t.ok(m1.every((e, i) => i === 0 || e.revision > m1[i - 1]!.revision), 'revisions increase');
    const del = w.events.find((e) => e.type === 'delete');
    t.same(del && del.type === 'delete' ? del.key : null, 'm2', 'a delete event');
    t.notOk(w.state.has('m2'));
    t.same(w.state.get('m1')?.value, { n: 20 });
    t.equal(w.events.filter((e) => e.type === 'sync').length, 1, 'one sync');

    // A delete of a key the watcher never had is not an event; a second watcher on the same
    // handle is the barrier (same handle, same order).
    const before = w.events.length;
    await b.delete('machines', 'never-existed');
    const w2 = record(a, 'machines');
    await waitFor(() => w2.events.length > 0, WAIT, 'the second sync');
    await b.put('machines', 'barrier', 1);
    await waitFor(() => w2.state.has('barrier') && w.state.has('barrier'), WAIT, 'the barrier');
    t.same(w.events.slice(before).map((e) => e.type), ['put'], 'only the barrier put');
    t.same([...w2.state.keys()].sort(), ['barrier', 'm1', 'm3'], 'a late watcher starts from the current state');

    // After off(), nothing more.
    w.off();
    const n = w.events.length;
    await b.put('machines', 'after', 1);
    await waitFor(() => w2.state.has('after'), WAIT, 'the second watcher');
    t.equal(w.events.length, n, 'no events after off()');
    w2.off();
  });

  t.test(`${name}: watch of an empty collection`, async (t) => {
    const [a, b] = await pair(t);
    const w = record(a, 'challenges');
    await waitFor(() => w.events.length > 0, WAIT, 'the initial sync');
    t.same(w.events[0], { type: 'sync', entries: new Map() });
    await b.put('challenges', 'token1', 'key-authz');
    await waitFor(() => w.state.has('token1'), WAIT, 'the put');
    t.same(w.state.get('token1')?.value, 'key-authz');
  });

  t.test(`${name}: locks`, async (t) => {
    const [a, b] = await pair(t);
    const l1 = await a.tryLock('issue:example.com', 'node-a', 60_000);
    t.match(l1, { acquired: true, owner: 'node-a' });
    t.match(await b.tryLock('issue:example.com', 'node-b', 60_000), { acquired: false, owner: 'node-a', expiresAt: l1.expiresAt }, 'exclusive');
    await sleep(2);
    const l2 = await a.tryLock('issue:example.com', 'node-a', 60_000);
    t.ok(l2.acquired && l2.expiresAt > l1.expiresAt, 'the owner renews');
    t.equal(await b.unlock('issue:example.com', 'node-b'), false, 'unlock by a non-owner is a no-op');
    t.match(await b.tryLock('issue:example.com', 'node-b', 60_000), { acquired: false, owner: 'node-a' }, 'still held');
    t.equal(await a.unlock('issue:example.com', 'node-a'), true);
    t.match(await b.tryLock('issue:example.com', 'node-b', 60_000), { acquired: true, owner: 'node-b' }, 'free again');
    t.equal(await a.unlock('nobody-holds-this', 'node-a'), false);

    // Expiry: a lapsed lock is taken over, and the old owner's unlock leaves the new one alone.
    const short = await a.tryLock('renew:x', 'node-a', 1);
    t.ok(short.acquired);
    await waitFor(() => Date.now() > short.expiresAt, WAIT, 'expiry');
    t.match(await b.tryLock('renew:x', 'node-b', 60_000), { acquired: true, owner: 'node-b' }, 'taken over');
    t.equal(await a.unlock('renew:x', 'node-a'), false, 'the old owner cannot release it');
    t.match(await a.tryLock('renew:x', 'node-a', 60_000), { acquired: false, owner: 'node-b' });

    // Racing contenders on both handles: exactly one wins.
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b).tryLock('race', `node-${i}`, 60_000)),
    );
    const winners = results.filter((r) => r.acquired);
    t.equal(winners.length, 1, 'one winner');
    t.ok(results.every((r) => r.owner === winners[0]!.owner), 'everyone agrees who holds it');
  });

  t.test(`${name}: publish and subscribe`, async (t) => {
    const [a, b] = await pair(t);
    const all: Array<[unknown, string]> = [];
    const one: Array<[unknown, string]> = [];
    b.subscribe('load.>', (data, subject) => void all.push([data, subject]));
    b.subscribe('load.*', (data, subject) => void one.push([data, subject]));
    // Interest reaches the server asynchronously: publish until it arrives.
    await waitFor(
      () => {
        a.publish('load.m1', { inflight: 3 });
        return all.length > 0;
      },
      WAIT,
      'a message',
    );
    t.same(all[0], [{ inflight: 3 }, 'load.m1'], 'data and subject as published');
    t.ok(Object.isFrozen(all[0]![0]), 'frozen');
    await waitFor(() => one.length > 0, WAIT, 'the * subscriber');
    a.publish('load.m1.deep', 1);
    await waitFor(() => all.some(([, s]) => s === 'load.m1.deep'), WAIT, '> matches deeper');
    t.notOk(one.some(([, s]) => s === 'load.m1.deep'), '* does not match two tokens (same connection, delivered in order)');

    // Natural strings as subject tokens.
    const host = subjectToken('*.example.com');
    const got: string[] = [];
    b.subscribe(`cert.${host}`, (_d, s) => void got.push(s));
    await waitFor(
      () => {
        a.publish(`cert.${host}`, 1);
        return got.length > 0;
      },
      WAIT,
      'the escaped subject',
    );
    t.equal(got[0], `cert.${host}`);

    // Unsubscribe: a's own publishes go out after its unsubscribe, on one connection, in order.
    const mine: string[] = [];
    const off = a.subscribe('own.x', (_d, s) => void mine.push(s));
    const barrier: string[] = [];
    a.subscribe('own.y', (_d, s) => void barrier.push(s));
    await waitFor(
      () => {
        a.publish('own.x', 1);
        return mine.length > 0;
      },
      WAIT,
      'own subscription',
    );
    off();
    const n = mine.length;
    a.publish('own.x', 2);
    await waitFor(
      () => {
        a.publish('own.y', 1);
        return barrier.length > 0;
      },
      WAIT,
      'the barrier',
    );
    t.equal(mine.length, n, 'nothing after unsubscribe');
  });

  t.test(`${name}: request and reply`, async (t) => {
    const [a, b] = await pair(t);
    b.serve('cmd.node-b.>', async (data, subject) => {
      const d = data as { op: string; id?: string };
      if (d.op === 'fail') throw Object.assign(new Error('machine m9 not found'), { code: 'PM01' });
      if (d.op === 'plain') throw new Error('plain failure');
      await sleep(1);
      return { done: d.op, subject };
    });
    const r = await untilServed(() => a.request('cmd.node-b.start', { op: 'start', id: 'm1' }));
    t.same(r, { done: 'start', subject: 'cmd.node-b.start' }, "the owner's result");
    const err = await a.request('cmd.node-b.start', { op: 'fail' }).catch((e: unknown) => e);
    t.match(err, { code: 'remote', remoteCode: 'PM01', message: /machine m9 not found/ }, 'handler errors travel back');
    t.match(await a.request('cmd.node-b.x', { op: 'plain' }).catch((e: unknown) => e), { code: 'remote', remoteCode: undefined, message: /plain failure/ });
    t.ok(err instanceof StoreError);

    await t.rejects(a.request('cmd.nobody.start', {}, 10_000), code('no-responder'), 'nobody serves it: no-responder, not a timeout');

    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    t.teardown(() => release());
    const offSlow = b.serve('cmd.slow', () => held);
    await untilServed(() => a.request('cmd.slow', {}, 200).catch((e: unknown) => {
      if (e instanceof StoreError && e.code === 'timeout') return;
      throw e;
    }));
    await t.rejects(a.request('cmd.slow', {}, 100), code('timeout'), 'a slow responder times out');
    offSlow();
    release();
    await waitFor(async () => (await errorCode(a.request('cmd.slow', {}, 2000))) === 'no-responder', WAIT, 'no responder after unserve');
    t.pass('unserve removes the responder');
  });

  t.test(`${name}: awkward keys are encoded, natural keys come back`, async (t) => {
    const [a, b] = await pair(t);
    const keys = ['*.example.com', 'api.example.com', 'my_app', '_kv', 'a..b', '.lead', 'trail.', 'ünïcødé', 'a b', 'with/slash', 'a=b', '>', '*', 'Upper.Case'];
    const w = record(b, 'certs');
    for (const k of keys) await a.put('certs', k, { k });
    for (const k of keys) t.same((await b.get('certs', k))?.value, { k }, k);
    t.same(await b.keys('certs'), [...keys].sort(), 'keys() gives natural keys');
    await waitFor(() => w.state.size === keys.length, WAIT, 'the watcher');
    t.same([...w.state.keys()].sort(), [...keys].sort(), 'watch gives natural keys');
    await a.delete('certs', '*.example.com');
    await waitFor(() => !w.state.has('*.example.com'), WAIT, 'the delete');
    t.ok(w.state.has('api.example.com'), 'only that key');
    t.same((await a.create('locks', 'a.b_c', 1)) > 0, true);
    await t.rejects(b.create('locks', 'a.b_c', 2), code('conflict'), 'the same encoded key');
  });

  t.test(`${name}: invalid input is refused`, async (t) => {
    const [a] = await pair(t);
    await t.rejects(a.put('apps', '', 1), code('invalid'), 'empty key');
    await t.rejects(a.put('apps', 'x'.repeat(MAX_KEY_BYTES + 1), 1), code('invalid'), 'long key');
    await t.rejects(a.put('apps', 'é'.repeat(MAX_KEY_BYTES / 2 + 1), 1), code('invalid'), 'long in bytes');
    t.ok((await a.put('apps', 'x'.repeat(MAX_KEY_BYTES), 1)) > 0, 'the longest key');
    await t.rejects(a.get('apps', '\ud800x'), code('invalid'), 'lone surrogate');
    await t.rejects(a.get('nope' as 'apps', 'x'), code('invalid'), 'unknown collection');
    await t.rejects(a.put('apps', 'x', undefined), code('invalid'), 'undefined value');
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    await t.rejects(a.put('apps', 'x', cyclic), code('invalid'), 'cyclic value');
    await t.rejects(a.put('apps', 'x', 'y'.repeat(MAX_VALUE_BYTES)), code('invalid'), 'oversized value');
    await t.rejects(a.update('apps', 'x', 1, 0), code('invalid'), 'revision 0');
    await t.rejects(a.update('apps', 'x', 1, 1.5), code('invalid'), 'fractional revision');
    await t.rejects(a.delete('apps', 'x', -1), code('invalid'), 'negative revision');
    await t.rejects(a.tryLock('l', '', 1000), code('invalid'), 'empty owner');
    await t.rejects(a.tryLock('l', 'o', 0), code('invalid'), 'zero ttl');
    t.throws(() => a.publish('a..b', 1), code('invalid'), 'empty token');
    t.throws(() => a.publish('load.*', 1), code('invalid'), 'wildcard in publish');
    t.throws(() => a.publish('', 1), code('invalid'), 'empty subject');
    t.throws(() => a.publish('a b', 1), code('invalid'), 'space');
    t.throws(() => a.publish('x', undefined), code('invalid'), 'undefined message');
    t.throws(() => a.subscribe('a.>.b', () => {}), code('invalid'), '> not last');
    await t.rejects(a.request('x', {}, 0), code('invalid'), 'zero timeout');
    await t.rejects(a.request('x.*', {}), code('invalid'), 'wildcard request');
  });

  t.test(`${name}: a closed handle refuses calls; the other keeps working`, async (t) => {
    const [a, b] = await pair(t);
    const w = record(a, 'apps');
    await waitFor(() => w.events.length > 0, WAIT, 'sync');
    await a.close();
    await a.close();
    t.pass('close is idempotent');
    t.equal(a.connected(), false);
    await t.rejects(a.get('apps', 'x'), code('closed'));
    await t.rejects(a.put('apps', 'x', 1), code('closed'));
    await t.rejects(a.list('apps'), code('closed'));
    await t.rejects(a.tryLock('l', 'o', 1000), code('closed'));
    await t.rejects(a.request('x', 1), code('closed'));
    t.throws(() => a.watch('apps', () => {}), code('closed'));
    t.throws(() => a.publish('x', 1), code('closed'));
    t.throws(() => a.subscribe('x', () => {}), code('closed'));
    t.throws(() => a.serve('x', () => 1), code('closed'));
    t.throws(() => a.onStatus(() => {}), code('closed'));
    const n = w.events.length;
    await b.put('apps', 'x', 1);
    t.same((await b.get('apps', 'x'))?.value, 1, 'the other handle works');
    const w2 = record(b, 'apps');
    await waitFor(() => w2.state.has('x'), WAIT, 'b sees it');
    t.equal(w.events.length, n, "the closed handle's watcher is silent");
  });
}

/** Milliseconds from the start of a put on `a` until a watcher on `b` is called with it, `n` times. */
export async function propagation(a: ClusterStore, b: ClusterStore, n: number): Promise<number[]> {
  let want = -1;
  let arrived: (() => void) | null = null;
  let synced = false;
  const off = b.watch('machines', (ev) => {
    if (ev.type === 'sync') synced = true;
    if (ev.type === 'put' && ev.entry.key === 'probe' && (ev.entry.value as { i: number }).i === want) arrived?.();
  });
  await waitFor(() => synced, WAIT, 'sync');
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    want = i;
    const seen = new Promise<void>((r) => (arrived = r));
    const t0 = performance.now();
    await a.put('machines', 'probe', { i });
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`probe ${i} never reached the watcher`)), WAIT);
    });
    await Promise.race([seen, late]).finally(() => clearTimeout(timer));
    samples.push(performance.now() - t0);
  }
  off();
  return samples;
}

export function summary(ms: number[]): string {
  const s = [...ms].sort((x, y) => x - y);
  const q = (p: number): string => s[Math.min(s.length - 1, Math.floor(p * s.length))]!.toFixed(1);
  return `n=${s.length} median ${q(0.5)} ms, p90 ${q(0.9)} ms, max ${s[s.length - 1]!.toFixed(1)} ms`;
}
