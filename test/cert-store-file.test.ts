import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildCertTable, readCertDir } from '../src/tls/certTable.ts';
import { createSelfSigned } from '../src/tls/selfsigned.ts';
import type { WriteStep } from '../src/tls/store/atomicFs.ts';
import { CertStoreFileError, FileCertStore, type CertStoreWarning } from '../src/tls/store/fileStore.ts';
import { runCertStoreConformance, storedCert } from './helpers/cert-store-conformance.ts';

const DIRECTORY = 'https://acme.test/directory';
const FILE_STORE = join(import.meta.dirname, '..', 'src', 'tls', 'store', 'fileStore.ts');

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'petrel-certstore-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function openStore(t: Test, dir: string, warnings: CertStoreWarning[] = []): Promise<FileCertStore> {
  const store = await FileCertStore.open(dir, { onWarning: (w) => warnings.push(w) });
  t.teardown(() => store.close());
  return store;
}

const fp = (pem: string): string => new X509Certificate(pem).fingerprint256;
const mode = async (path: string): Promise<number> => (await stat(path)).mode & 0o777;
/** What an interrupted write can leave: our dot names that no visible name links to. */
async function leftovers(dir: string): Promise<string[]> {
  const entries = await readdir(dir);
  const live = new Set<string>();
  for (const e of entries) {
    if ((await lstat(join(dir, e))).isSymbolicLink()) live.add(await readlink(join(dir, e)));
  }
  return entries.filter((e) => !live.has(e) && /^\..+\.(?:[gald]-[0-9a-f]{16}|[0-9a-f]{16}\.tmp)$/.test(e));
}

runCertStoreConformance(t, 'file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'petrel-certstore-'));
  return { store: await FileCertStore.open(join(dir, 'certs')), cleanup: () => rm(dir, { recursive: true, force: true }) };
});

t.test('file layout: readCertDir and the cert table see custom certificates put through the store', async (t) => {
  const dir = await tempDir(t);
  const store = await openStore(t, dir);
  const a = createSelfSigned(['a.example.com']);
  const wild = createSelfSigned(['*.example.com']);
  const acme = createSelfSigned(['acme.example.com']);
  await store.putCert(storedCert('a.example.com', 'custom', a));
  await store.putCert(storedCert('*.example.com', 'custom', wild));
  await store.putCert(storedCert('acme.example.com', 'acme', acme));

  t.ok((await lstat(join(dir, 'a.example.com'))).isSymbolicLink(), 'the visible name is a link to a generation');
  t.ok((await lstat(join(dir, 'wildcard_.example.com'))).isSymbolicLink(), 'a wildcard directory name without a glob character');
  t.equal(await readFile(join(dir, 'a.example.com', 'cert.pem'), 'utf8'), a.certPem);
  t.equal(await readFile(join(dir, '_acme', 'certs', 'acme.example.com', 'chain.pem'), 'utf8'), acme.certPem);

  const read = await readCertDir(dir);
  t.same(read.warnings, []);
  t.same(read.sources.map((s) => [s.label, s.origin]), [['a.example.com', 'custom'], ['wildcard_.example.com', 'custom']], 'ACME pairs and generations are not custom certificates');
  const built = buildCertTable(read.sources, null);
  t.same(built.warnings, []);
  t.equal(built.table.lookup('a.example.com')?.fingerprint256, fp(a.certPem));
  t.equal(built.table.lookup('z.example.com')?.fingerprint256, fp(wild.certPem));
});

t.test('file modes: keys 0600, key-holding directories 0700', async (t) => {
  const dir = await tempDir(t);
  const store = await openStore(t, dir);
  const a = createSelfSigned(['a.example.com']);
  await store.putCert(storedCert('a.example.com', 'custom', a));
  await store.putCert(storedCert('a.example.com', 'acme', a));
  await store.putAccount({ directoryUrl: DIRECTORY, accountKeyPem: createSelfSigned(['x']).keyPem, accountUrl: null, email: null, createdAt: 1 });
  t.equal(await mode(join(dir, 'a.example.com', 'key.pem')), 0o600, 'custom key');
  t.equal(await mode(join(dir, '_acme', 'certs', 'a.example.com', 'key.pem')), 0o600, 'acme key');
  t.equal(await mode(join(dir, 'a.example.com')), 0o700, 'custom generation');
  t.equal(await mode(join(dir, '_acme', 'certs', 'a.example.com')), 0o700, 'acme generation');
  t.equal(await mode(join(dir, '_acme')), 0o700);
  const accounts = join(dir, '_acme', 'accounts');
  t.equal(await mode(accounts), 0o700);
  const [accountFile] = await readdir(accounts);
  t.equal(await mode(join(accounts, accountFile!)), 0o600, 'the account file holds the account key');
});

t.test('state survives a reopen', async (t) => {
  const dir = await tempDir(t);
  const a = createSelfSigned(['a.example.com']);
  const b = createSelfSigned(['b.example.com']);
  const account = { directoryUrl: DIRECTORY, accountKeyPem: createSelfSigned(['x']).keyPem, accountUrl: 'https://acme.test/acct/1', email: null, createdAt: 5 };
  const st = { hostname: 'b.example.com', status: 'active' as const, lastError: null, failures: 0, nextAttemptAt: 1_800_000_000_000, updatedAt: 1_700_000_000_000 };
  const now = Date.now();
  {
    const store = await FileCertStore.open(dir);
    await store.putAccount(account);
    await store.putCert(storedCert('a.example.com', 'custom', a));
    await store.putCert(storedCert('b.example.com', 'acme', b));
    await store.putState(st);
    await store.recordOrder(DIRECTORY, now - 1000);
    await store.recordOrder(DIRECTORY, now);
    await store.putChallenge('tok', 'tok.x');
    await store.tryLock('l', 'me', 3600_000);
    await store.close();
    await t.rejects(store.getCert('a.example.com', 'custom'), /closed/, 'a closed store refuses calls');
  }
  const warnings: CertStoreWarning[] = [];
  const store = await openStore(t, dir, warnings);
  t.same(await store.getAccount(DIRECTORY), account);
  t.equal((await store.getCert('a.example.com', 'custom'))?.keyPem, a.keyPem);
  t.equal((await store.getCert('b.example.com', 'acme'))?.chainPem, b.certPem);
  t.same(await store.getState('b.example.com'), st);
  t.equal(await store.ordersSince(DIRECTORY, now - 3600_000), 2);
  t.equal(await store.getChallenge('tok'), null, 'challenges are in memory only');
  t.equal(await store.tryLock('l', 'other', 1000), true, 'so are locks');
  t.same(store.repairs, [], 'a clean close leaves nothing to repair');
  t.same(warnings, []);
});

t.test('the order log keeps one day', async (t) => {
  const dir = await tempDir(t);
  const store = await openStore(t, dir);
  const now = Date.now();
  await store.recordOrder(DIRECTORY, now - 3 * 24 * 3600_000);
  await store.recordOrder('https://old.test/directory', now - 2 * 24 * 3600_000);
  await store.recordOrder(DIRECTORY, now);
  t.equal(await store.ordersSince(DIRECTORY, 0), 1, 'older than a day: pruned');
  const log = JSON.parse(await readFile(join(dir, '_acme', 'orders.json'), 'utf8')) as { orders: Record<string, number[]> };
  t.same(log, { orders: { [DIRECTORY]: [now] } }, 'a directory URL with no recent orders is dropped');
});

t.test("operator's directories: listed with parsed meta, bad ones skipped with a warning", async (t) => {
  const dir = await tempDir(t);
  const op = createSelfSigned(['op.example.com']);
  const other = createSelfSigned(['other.test']);
  const put = async (name: string, files: Record<string, string>): Promise<void> => {
    await mkdir(join(dir, name));
    for (const [f, data] of Object.entries(files)) await writeFile(join(dir, name, f), data);
  };
  await put('op.example.com', { 'cert.pem': op.certPem, 'key.pem': op.keyPem });
  await put('My Cert', { 'cert.pem': op.certPem, 'key.pem': op.keyPem });
  await put('mismatch.example.com', { 'cert.pem': other.certPem, 'key.pem': op.keyPem });
  await put('nokey.example.com', { 'cert.pem': op.certPem });
  await put('*.example.com', { 'cert.pem': op.certPem, 'key.pem': op.keyPem });
  await put('_self-signed', { 'cert.pem': 'x', 'key.pem': 'y' });
  await put('.editor', { 'cert.pem': 'x' });
  await writeFile(join(dir, 'README.md'), 'read me');
  const mtime = new Date('2025-01-02T03:04:05Z');
  await utimes(join(dir, 'op.example.com', 'cert.pem'), mtime, mtime);

  const warnings: CertStoreWarning[] = [];
  const store = await openStore(t, dir, warnings);
  const certs = await store.listCerts();
  t.same(certs.map((c) => c.hostname), ['op.example.com'], 'named after its directory');
  t.same(certs[0]!.meta.names, ['op.example.com']);
  t.equal(certs[0]!.meta.fingerprint256, fp(op.certPem));
  t.equal(certs[0]!.meta.storedAt, mtime.getTime(), 'dated by the chain file');
  const byFile = warnings.map((w) => `${w.file.slice(dir.length + 1)}: ${w.message}`).sort();
  t.equal(byFile.length, 4, byFile.join('\n'));
  t.match(byFile[0], /^\*\.example\.com: .*not a lower-case host name/, 'the store names wildcards wildcard_.example.com');
  t.match(byFile[1], /^My Cert: .*not a lower-case host name/);
  t.match(byFile[2], /^mismatch\.example\.com: .*does not match/);
  t.match(byFile[3], /^nokey\.example\.com\/key\.pem: .*ENOENT.*skipped/);

  await t.rejects(store.getCert('mismatch.example.com', 'custom'), { name: 'CertStoreFileError', file: join(dir, 'mismatch.example.com') });
  await t.rejects(store.getCert('nokey.example.com', 'custom'), { name: 'CertStoreFileError', file: join(dir, 'nokey.example.com', 'key.pem') });

  // Replacing an operator's real directory goes through the same atomic swap.
  const renewed = createSelfSigned(['op.example.com']);
  await store.putCert(storedCert('op.example.com', 'custom', renewed));
  t.ok((await lstat(join(dir, 'op.example.com'))).isSymbolicLink());
  t.same(await leftovers(dir), [], 'the set-aside directory is gone');
  t.equal((await store.getCert('op.example.com', 'custom'))?.keyPem, renewed.keyPem);
  t.equal(await store.deleteCert('mismatch.example.com', 'custom'), true, "an operator's directory can be deleted");
  await t.rejects(lstat(join(dir, 'mismatch.example.com')), { code: 'ENOENT' });
  t.same(await leftovers(dir), []);
});

t.test("an operator's symlinked directory: read through, deleting removes the link only", async (t) => {
  const base = await tempDir(t);
  const dir = join(base, 'certs');
  const outside = join(base, 'letsencrypt-live');
  const op = createSelfSigned(['link.example.com']);
  await mkdir(outside);
  await writeFile(join(outside, 'cert.pem'), op.certPem);
  await writeFile(join(outside, 'key.pem'), op.keyPem);
  await mkdir(dir);
  await symlink(outside, join(dir, 'link.example.com'));
  const store = await openStore(t, dir);
  t.equal((await store.getCert('link.example.com', 'custom'))?.keyPem, op.keyPem);
  t.equal(await store.deleteCert('link.example.com', 'custom'), true);
  t.same((await readdir(outside)).sort(), ['cert.pem', 'key.pem'], "the operator's files are untouched");
});

t.test('a corrupt file is an error naming it, or a skipped entry with a warning', async (t) => {
  const dir = await tempDir(t);
  const warnings: CertStoreWarning[] = [];
  const store = await openStore(t, dir, warnings);
  const a = createSelfSigned(['a.example.com']);
  await store.putCert(storedCert('a.example.com', 'acme', a));
  await store.putCert(storedCert('b.example.com', 'acme', createSelfSigned(['b.example.com'])));
  await store.putState({ hostname: 'a.example.com', status: 'pending', lastError: null, failures: 0, nextAttemptAt: null, updatedAt: 1 });
  await store.putState({ hostname: 'b.example.com', status: 'pending', lastError: null, failures: 0, nextAttemptAt: null, updatedAt: 1 });
  await store.putAccount({ directoryUrl: DIRECTORY, accountKeyPem: a.keyPem, accountUrl: null, email: null, createdAt: 1 });
  await store.recordOrder(DIRECTORY, Date.now());

  const metaFile = join(dir, '_acme', 'certs', 'a.example.com', 'meta.json');
  await writeFile(metaFile, '{"names": [');
  const stateFile = join(dir, '_acme', 'states', 'a.example.com.json');
  await writeFile(stateFile, JSON.stringify({ hostname: 'a.example.com', status: 'weird' }));
  const accountFile = join(dir, '_acme', 'accounts', (await readdir(join(dir, '_acme', 'accounts')))[0]!);
  await writeFile(accountFile, 'null');
  const ordersFile = join(dir, '_acme', 'orders.json');
  await writeFile(ordersFile, '{"orders": {"x": "y"}}');

  await t.rejects(store.getCert('a.example.com', 'acme'), { name: 'CertStoreFileError', file: metaFile, message: /meta\.json: not valid JSON/ });
  await t.rejects(store.getState('a.example.com'), { name: 'CertStoreFileError', file: stateFile, message: /status must be/ });
  await t.rejects(store.getAccount(DIRECTORY), { name: 'CertStoreFileError', file: accountFile });
  await t.rejects(store.ordersSince(DIRECTORY, 0), { name: 'CertStoreFileError', file: ordersFile });
  await t.rejects(store.recordOrder(DIRECTORY, 0), { name: 'CertStoreFileError', file: ordersFile }, 'a corrupt log is not overwritten');
  await writeFile(ordersFile, 'null');
  await t.rejects(store.ordersSince(DIRECTORY, 0), { name: 'CertStoreFileError', file: ordersFile }, 'JSON null is corrupt, not missing');

  t.same((await store.listCerts()).map((c) => c.hostname), ['b.example.com']);
  t.same((await store.listStates()).map((s) => s.hostname), ['b.example.com']);
  t.same(warnings.map((w) => w.file), [metaFile, stateFile]);
  t.ok(warnings.every((w) => w.message.endsWith('skipped')));
  t.ok(warnings[0]!.message.includes(metaFile), 'the message names the file');

  // A chain replaced by hand after the store wrote it: the older meta.json is not trusted.
  const b2 = createSelfSigned(['b.example.com']);
  const bDir = join(dir, '_acme', 'certs', 'b.example.com');
  await writeFile(join(bDir, 'key.pem'), b2.keyPem);
  await writeFile(join(bDir, 'chain.pem'), b2.certPem);
  const future = new Date(Date.now() + 60_000);
  await utimes(join(bDir, 'chain.pem'), future, future);
  t.equal((await store.getCert('b.example.com', 'acme'))?.meta.fingerprint256, fp(b2.certPem));
});

t.test('path-traversal host names write nothing outside the certs directory', async (t) => {
  const base = await tempDir(t);
  const dir = join(base, 'certs');
  const store = await openStore(t, dir);
  const pair = createSelfSigned(['evil.test']);
  for (const hostname of ['../evil', '..', '../../tmp/evil', 'a/../../evil', '/etc/evil', '_acme/../../evil', '.hidden', '_self-signed']) {
    await t.rejects(store.putCert(storedCert(hostname, 'custom', pair)), { code: 'bad-hostname' }, hostname);
    await t.rejects(store.putCert(storedCert(hostname, 'acme', pair)), { code: 'bad-hostname' }, hostname);
    await t.rejects(store.putState({ hostname, status: 'pending', lastError: null, failures: 0, nextAttemptAt: null, updatedAt: 1 }), { code: 'bad-hostname' });
    await t.rejects(store.deleteCert(hostname, 'custom'), { code: 'bad-hostname' });
  }
  t.same(await readdir(base), ['certs']);
  t.same(await readdir(dir), []);
});

t.test('a throwing watcher does not fail the write', async (t) => {
  const dir = await tempDir(t);
  const warnings: CertStoreWarning[] = [];
  const store = await openStore(t, dir, warnings);
  store.watch(() => {
    throw new Error('boom');
  });
  await store.putState({ hostname: 'a.example.com', status: 'pending', lastError: null, failures: 0, nextAttemptAt: null, updatedAt: 1 });
  t.ok(await store.getState('a.example.com'));
  t.match(warnings, [{ message: /watcher threw: boom/ }]);
});

t.test('putAccount checks the record', async (t) => {
  const dir = await tempDir(t);
  const store = await openStore(t, dir);
  const ok = { directoryUrl: DIRECTORY, accountKeyPem: createSelfSigned(['x']).keyPem, accountUrl: null, email: null, createdAt: 1 };
  await t.rejects(store.putAccount({ ...ok, directoryUrl: 'not a url' }), { code: 'bad-input', message: /directoryUrl/ });
  await t.rejects(store.putAccount({ ...ok, accountKeyPem: 'garbage' }), { code: 'bad-input', message: /accountKeyPem/ });
  t.equal(await store.getAccount(DIRECTORY), null);
});

// ---- crashes

/**
 * Runs a write in a child process that SIGKILLs itself at `step` (FileCertStore onStep): the
 * process dies there for real, with no catch or finally run after it.
 */
async function crashAt(dir: string, step: WriteStep, op: { cert?: unknown; state?: unknown }): Promise<void> {
  const input = join(dir, '..', `crash-input-${process.pid}.json`);
  await writeFile(input, JSON.stringify(op));
  const script = `
    import { readFileSync } from 'node:fs';
    import { FileCertStore } from ${JSON.stringify(pathToFileURL(FILE_STORE).href)};
    const [dir, step, input] = process.argv.slice(1);
    const op = JSON.parse(readFileSync(input, 'utf8'));
    const store = await FileCertStore.open(dir, { onStep: (s) => { if (s === step) process.kill(process.pid, 'SIGKILL'); } });
    if (op.cert) await store.putCert(op.cert);
    if (op.state) await store.putState(op.state);
    process.exitCode = 3; // the step was never reached
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, dir, step, input], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((res) => child.on('exit', (c, s) => res([c, s])));
  await rm(input, { force: true });
  if (signal !== 'SIGKILL') throw new Error(`child did not die at ${step}: exit ${code} ${stderr}`);
}

/** What readCertDir serves for `label`, checked to be a matching pair. */
async function servedBy(t: Test, dir: string, label: string): Promise<string | null> {
  const read = await readCertDir(dir);
  const src = read.sources.find((s) => s.label === label);
  if (src === undefined) return null;
  const built = buildCertTable([src], null);
  t.same(built.warnings, [], `${label}: a whole pair, never a new key with the old chain`);
  return fp(src.certPem);
}

const PAIR_STEPS: readonly WriteStep[] = ['pair-key-written', 'pair-generation-complete', 'pair-swapped'];

for (const source of ['custom', 'acme'] as const) {
  for (const step of PAIR_STEPS) {
    t.test(`a crash at ${step} (${source}) leaves one whole pair, repaired on open`, async (t) => {
      const dir = await tempDir(t);
      const oldPair = createSelfSigned(['a.example.com']);
      const newPair = createSelfSigned(['a.example.com']);
      {
        const store = await FileCertStore.open(dir);
        await store.putCert(storedCert('a.example.com', source, oldPair));
        await store.close();
      }
      await crashAt(dir, step, { cert: storedCert('a.example.com', source, newPair) });
      const root = source === 'custom' ? dir : join(dir, '_acme', 'certs');
      t.ok((await leftovers(root)).length > 0, 'the crash left something behind');
      const survivor = step === 'pair-swapped' ? newPair : oldPair;
      if (source === 'custom') t.equal(await servedBy(t, dir, 'a.example.com'), fp(survivor.certPem), 'readCertDir before any repair');

      const warnings: CertStoreWarning[] = [];
      const store = await openStore(t, dir, warnings);
      t.ok(store.repairs.length > 0, 'open repaired it');
      t.equal(warnings.length, store.repairs.length, 'and said so');
      t.same(await leftovers(root), [], 'no leftovers after open');
      const got = await store.getCert('a.example.com', source);
      t.equal(got?.chainPem, survivor.certPem);
      t.equal(got?.keyPem, survivor.keyPem);
      t.equal(got?.meta.fingerprint256, fp(survivor.certPem));
      // The store still works on the repaired directory.
      await store.putCert(storedCert('a.example.com', source, newPair));
      t.equal((await store.getCert('a.example.com', source))?.keyPem, newPair.keyPem);
      t.same(await leftovers(root), []);
    });
  }
}

for (const step of ['pair-generation-complete', 'pair-moved-aside', 'pair-swapped'] as const) {
  t.test(`a crash at ${step} while replacing an operator's directory keeps a whole pair`, async (t) => {
    const dir = await tempDir(t);
    const oldPair = createSelfSigned(['op.example.com']);
    const newPair = createSelfSigned(['op.example.com']);
    await mkdir(join(dir, 'op.example.com'));
    await writeFile(join(dir, 'op.example.com', 'cert.pem'), oldPair.certPem);
    await writeFile(join(dir, 'op.example.com', 'key.pem'), oldPair.keyPem);
    await crashAt(dir, step, { cert: storedCert('op.example.com', 'custom', newPair) });
    t.ok((await leftovers(dir)).length > 0, 'the crash left something behind');

    const store = await openStore(t, dir);
    t.ok(store.repairs.length > 0);
    t.same(await leftovers(dir), []);
    const survivor = step === 'pair-swapped' ? newPair : oldPair;
    t.equal(await servedBy(t, dir, 'op.example.com'), fp(survivor.certPem));
    t.equal((await store.getCert('op.example.com', 'custom'))?.keyPem, survivor.keyPem);
    if (step !== 'pair-swapped') {
      t.notOk((await lstat(join(dir, 'op.example.com'))).isSymbolicLink(), "the operator's own directory is back");
    }
  });
}

t.test('a crash mid JSON write keeps the previous state', async (t) => {
  const dir = await tempDir(t);
  const before = { hostname: 'a.example.com', status: 'pending', lastError: null, failures: 0, nextAttemptAt: null, updatedAt: 1 };
  {
    const store = await FileCertStore.open(dir);
    await store.putState(before as never);
    await store.close();
  }
  await crashAt(dir, 'json-tmp-written', { state: { ...before, status: 'failed', failures: 1 } });
  const states = join(dir, '_acme', 'states');
  t.equal((await leftovers(states)).length, 1, 'the temp file is there');
  const store = await openStore(t, dir);
  t.same(await store.getState('a.example.com'), before);
  t.same(await leftovers(states), []);
});

t.test('open leaves dot files that are not ours alone', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, '.gitignore'), '*\n');
  await mkdir(join(dir, '.a.example.com.swp'));
  await writeFile(join(dir, '.x.g-zz.tmp'), '');
  const store = await openStore(t, dir);
  t.same(store.repairs, []);
  t.same((await readdir(dir)).sort(), ['.a.example.com.swp', '.gitignore', '.x.g-zz.tmp']);
});

t.test('CertStoreFileError names the file in its message', async (t) => {
  const e = new CertStoreFileError('/x/meta.json', 'not valid JSON');
  t.equal(e.message, '/x/meta.json: not valid JSON');
  t.equal(e.file, '/x/meta.json');
});
