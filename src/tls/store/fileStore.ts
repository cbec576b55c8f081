// The certificate store on one node's disk, under the certs directory:
//
//   certs/<host>/{cert.pem,key.pem,meta.json}      custom certificates (the layout readCertDir reads)
//   certs/_acme/accounts/<sha256(url)>.json         one ACME account per directory URL (0600)
//   certs/_acme/certs/<host>/{chain.pem,key.pem,meta.json}
//   certs/_acme/states/<host>.json                  issuance state
//   certs/_acme/orders.json                         orders of the last day, per directory URL
//
// `<host>` is the host name, or `wildcard_.example.com` for `*.example.com`: a `*` in a
// directory name turns `rm -r certs/*.example.com` into a glob over every sibling, a leading `_`
// would hide it from readCertDir, and no real DNS label holds `_` (validate.ts refuses it).
// Pair directories are symlinks to generation directories swapped atomically (atomicFs.ts);
// keys are 0600 in 0700 directories. Challenges and locks are in memory: one node, one process.
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, stat, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { recoverPairRoot, removePairDir, resolvePairDir, swapPairDir, writeFileAtomic, type PairFile, type StepHook } from './atomicFs.ts';
import type {
  AcmeAccountRecord,
  AlpnChallenge,
  CertMeta,
  CertStore,
  CertStoreChange,
  IssuanceState,
  StoredCert,
  StoredCertSource,
} from './certStore.ts';
import { CertRejected, describePair, inspectPair } from './inspect.ts';
import { accountProblem, copyAccount, copyMeta, copyState, isNum, metaProblem, ORDER_LOG_KEEP_MS, stateProblem } from './records.ts';
import { checkHostname, checkNonEmpty, checkToken, StoreInputError } from './validate.ts';

const WILDCARD_DIR = 'wildcard_.';

/** Something on disk the store cannot use; `file` names it. */
export class CertStoreFileError extends Error {
  readonly file: string;
  readonly problem: string;
  constructor(file: string, problem: string, cause?: unknown) {
    super(`${file}: ${problem}`, cause === undefined ? undefined : { cause });
    this.name = 'CertStoreFileError';
    this.file = file;
    this.problem = problem;
  }
}

/** An entry listCerts/listStates skipped, or a repair open() made. */
export interface CertStoreWarning {
  readonly file: string;
  readonly message: string;
}

export interface FileCertStoreOptions {
  /** Skipped entries and crash repairs; the store itself never logs. */
  readonly onWarning?: (warning: CertStoreWarning) => void;
  /** Fault injection for crash tests: called at each step of a durable write. */
  readonly onStep?: StepHook;
}

export function dirNameOf(hostname: string): string {
  return hostname.startsWith('*.') ? WILDCARD_DIR + hostname.slice(2) : hostname;
}

/** The host name a directory stands for, or null when it stands for none the store accepts. */
export function hostnameOfDir(dir: string): string | null {
  const host = dir.startsWith(WILDCARD_DIR) ? `*.${dir.slice(WILDCARD_DIR.length)}` : dir;
  try {
    checkHostname(host);
  } catch {
    return null;
  }
  // Only names that map back to the same directory: a hand-made `*.example.com` is not the
  // store's `wildcard_.example.com` and would otherwise be listed twice under one name.
  return dirNameOf(host) === dir ? host : null;
}

function checkSource(source: unknown): StoredCertSource {
  if (source !== 'acme' && source !== 'custom') throw new StoreInputError('bad-input', `certificate source must be 'acme' or 'custom', got ${JSON.stringify(source)}`);
  return source;
}

const isMissing = (err: unknown): boolean => (err as NodeJS.ErrnoException).code === 'ENOENT';
const toJson = (v: unknown): string => JSON.stringify(v, null, 2) + '\n';

const readProblem = (err: unknown): string => `cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;

/** `shown` is the path to name in errors: the visible one, not the generation behind it. */
async function readText(file: string, shown: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new CertStoreFileError(shown, readProblem(err), err);
  }
}

/** Parsed JSON, or undefined when the file does not exist (`null` is a corrupt file's content). */
async function readJson(file: string, shown: string = file): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw new CertStoreFileError(shown, readProblem(err), err);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new CertStoreFileError(shown, `not valid JSON (${(err as Error).message})`, err);
  }
}

// A Map, not an object: a directory URL is caller data and could be `__proto__`.
type OrderLog = Map<string, number[]>;

function parseOrderLog(raw: unknown, file: string): OrderLog {
  const log: OrderLog = new Map();
  if (raw === undefined) return log;
  const orders = typeof raw === 'object' && raw !== null ? (raw as { orders?: unknown }).orders : undefined;
  if (typeof orders !== 'object' || orders === null || Array.isArray(orders)) throw new CertStoreFileError(file, 'not an order log ({"orders": {url: [ms, ...]}})');
  for (const [url, list] of Object.entries(orders)) {
    if (!Array.isArray(list) || !list.every(isNum)) throw new CertStoreFileError(file, `orders of ${url} are not a list of times`);
    log.set(url, list);
  }
  return log;
}

interface Lock {
  readonly owner: string;
  readonly expiresAt: number;
}

export class FileCertStore implements CertStore {
  readonly description: string;
  /** Absolute path of the certs directory. */
  readonly dir: string;
  /** What open() repaired after an interrupted write (also passed to onWarning). */
  readonly repairs: readonly string[];
  readonly #acmeDir: string;
  readonly #onWarning: (w: CertStoreWarning) => void;
  readonly #onStep: StepHook | undefined;
  readonly #queues = new Map<string, Promise<void>>();
  readonly #watchers = new Set<(change: CertStoreChange) => void>();
  readonly #challenges = new Map<string, string>();
  readonly #alpn = new Map<string, AlpnChallenge>();
  readonly #locks = new Map<string, Lock>();
  #closed = false;

  private constructor(dir: string, repairs: readonly string[], opts: FileCertStoreOptions) {
    this.dir = dir;
    this.description = `file:${dir}`;
    this.repairs = Object.freeze(repairs.slice());
    this.#acmeDir = join(dir, '_acme');
    this.#onWarning = opts.onWarning ?? (() => {});
    this.#onStep = opts.onStep;
  }

  /** Opens (creating it if needed) the certs directory and repairs what a crash left. */
  static async open(certsDir: string, opts: FileCertStoreOptions = {}): Promise<FileCertStore> {
    const dir = resolve(certsDir);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const acme = join(dir, '_acme');
    const repairs: string[] = [];
    for (const root of [dir, acme, join(acme, 'certs'), join(acme, 'accounts'), join(acme, 'states')]) {
      repairs.push(...(await recoverPairRoot(root)));
    }
    for (const r of repairs) opts.onWarning?.({ file: dir, message: r });
    return new FileCertStore(dir, repairs, opts);
  }

  // ---- accounts

  async getAccount(directoryUrl: string): Promise<AcmeAccountRecord | null> {
    this.#live();
    checkNonEmpty(directoryUrl, 'directoryUrl');
    const file = this.#accountFile(directoryUrl);
    return this.#serial(`account:${file}`, async () => {
      const raw = await readJson(file);
      if (raw === undefined) return null;
      const problem = accountProblem(raw);
      if (problem !== null) throw new CertStoreFileError(file, `not an ACME account record: ${problem}`);
      const rec = raw as AcmeAccountRecord;
      if (rec.directoryUrl !== directoryUrl) throw new CertStoreFileError(file, `holds the account of ${rec.directoryUrl}, not ${directoryUrl}`);
      return copyAccount(rec);
    });
  }

  async putAccount(account: AcmeAccountRecord): Promise<void> {
    this.#live();
    const problem = accountProblem(account);
    if (problem !== null) throw new StoreInputError('bad-input', `ACME account refused: ${problem}`);
    const file = this.#accountFile(account.directoryUrl);
    await this.#serial(`account:${file}`, async () => {
      await mkdir(join(this.#acmeDir, 'accounts'), { recursive: true, mode: 0o700 });
      await writeFileAtomic(file, toJson(copyAccount(account)), 0o600, this.#onStep);
    });
  }

  // ---- certificates

  async getCert(hostname: string, source: StoredCertSource): Promise<StoredCert | null> {
    this.#live();
    checkHostname(hostname);
    checkSource(source);
    return this.#serial(`cert:${source}:${hostname}`, () => this.#readCert(hostname, source));
  }

  /** Checks the pair (inspectPair, against `hostname` and now); the stored meta is recomputed. */
  async putCert(cert: StoredCert): Promise<void> {
    this.#live();
    if (cert === null || typeof cert !== 'object') throw new StoreInputError('bad-input', 'putCert needs a StoredCert');
    const hostname = checkHostname(cert.hostname);
    const source = checkSource(cert.source);
    const meta = inspectPair(cert.chainPem, cert.keyPem, { hostname });
    // Key first and meta last: the crash tests stop after the key, and readMeta trusts a
    // meta.json only when it is not older than the chain.
    const files: PairFile[] = [
      { name: 'key.pem', data: cert.keyPem, mode: 0o600 },
      { name: chainFileName(source), data: cert.chainPem, mode: 0o644 },
      { name: 'meta.json', data: toJson(meta), mode: 0o644 },
    ];
    const root = this.#certRoot(source);
    await this.#serial(`cert:${source}:${hostname}`, async () => {
      await mkdir(root, { recursive: true, mode: 0o700 });
      await swapPairDir(root, dirNameOf(hostname), files, this.#onStep);
    });
    this.#emit({ kind: 'cert', hostname, source });
  }

  async deleteCert(hostname: string, source: StoredCertSource): Promise<boolean> {
    this.#live();
    checkHostname(hostname);
    checkSource(source);
    const deleted = await this.#serial(`cert:${source}:${hostname}`, () => removePairDir(this.#certRoot(source), dirNameOf(hostname)));
    if (deleted) this.#emit({ kind: 'cert', hostname, source });
    return deleted;
  }

  /**
   * Custom certificates (every directory readCertDir reads, also those an operator dropped in,
   * named after their directory) and ACME ones. An entry that cannot be read is skipped and
   * reported to onWarning; so is an operator's directory whose name is not a host name.
   */
  async listCerts(): Promise<StoredCert[]> {
    this.#live();
    const certs: StoredCert[] = [];
    for (const source of ['custom', 'acme'] as const) {
      const root = this.#certRoot(source);
      for (const entry of await readdirOrEmpty(root)) {
        // `_` is petrel's own, `.` is ours (generations) or editors': as in readCertDir.
        if (entry.startsWith('_') || entry.startsWith('.')) continue;
        const path = join(root, entry);
        if (!(await stat(path).then((s) => s.isDirectory(), () => false))) continue;
        const hostname = hostnameOfDir(entry);
        if (hostname === null) {
          this.#onWarning({ file: path, message: 'the directory name is not a lower-case host name, so the store cannot address it (the cert table still serves it)' });
          continue;
        }
        try {
          const cert = await this.#serial(`cert:${source}:${hostname}`, () => this.#readCert(hostname, source));
          if (cert !== null) certs.push(cert);
        } catch (err) {
          this.#warnSkip(path, err);
        }
      }
    }
    return certs;
  }

  // ---- issuance states

  async getState(hostname: string): Promise<IssuanceState | null> {
    this.#live();
    checkHostname(hostname);
    return this.#serial(`state:${hostname}`, () => this.#readState(hostname));
  }

  async putState(state: IssuanceState): Promise<void> {
    this.#live();
    if (state === null || typeof state !== 'object') throw new StoreInputError('bad-input', 'putState needs an IssuanceState');
    const hostname = checkHostname(state.hostname);
    const problem = stateProblem(state);
    if (problem !== null) throw new StoreInputError('bad-input', `issuance state of ${hostname} refused: ${problem}`);
    const file = this.#stateFile(hostname);
    await this.#serial(`state:${hostname}`, async () => {
      await mkdir(join(this.#acmeDir, 'states'), { recursive: true, mode: 0o700 });
      await writeFileAtomic(file, toJson(copyState(state)), 0o600, this.#onStep);
    });
    this.#emit({ kind: 'state', hostname });
  }

  async deleteState(hostname: string): Promise<boolean> {
    this.#live();
    checkHostname(hostname);
    const deleted = await this.#serial(`state:${hostname}`, () =>
      unlink(this.#stateFile(hostname)).then(
        () => true,
        (err: unknown) => {
          if (isMissing(err)) return false;
          throw err;
        },
      ),
    );
    if (deleted) this.#emit({ kind: 'state', hostname });
    return deleted;
  }

  async listStates(): Promise<IssuanceState[]> {
    this.#live();
    const states: IssuanceState[] = [];
    const dir = join(this.#acmeDir, 'states');
    for (const entry of await readdirOrEmpty(dir)) {
      if (entry.startsWith('.') || !entry.endsWith('.json')) continue;
      const hostname = hostnameOfDir(entry.slice(0, -'.json'.length));
      if (hostname === null) {
        this.#onWarning({ file: join(dir, entry), message: 'not named after a host name; skipped' });
        continue;
      }
      try {
        const s = await this.#serial(`state:${hostname}`, () => this.#readState(hostname));
        if (s !== null) states.push(s);
      } catch (err) {
        this.#warnSkip(join(dir, entry), err);
      }
    }
    return states;
  }

  // ---- order log

  async recordOrder(directoryUrl: string, at: number): Promise<void> {
    this.#live();
    checkNonEmpty(directoryUrl, 'directoryUrl');
    if (!isNum(at)) throw new StoreInputError('bad-input', 'order time must be a number (ms since epoch)');
    const file = join(this.#acmeDir, 'orders.json');
    await this.#serial('orders', async () => {
      const log = parseOrderLog(await readJson(file), file);
      log.set(directoryUrl, [...(log.get(directoryUrl) ?? []), at]);
      // The cap is hourly; a day of history is plenty and keeps the file small. Relative to
      // the order being recorded, not the clock, so that the log never depends on when it is read.
      const cutoff = at - ORDER_LOG_KEEP_MS;
      const kept: [string, number[]][] = [];
      for (const [url, times] of log) {
        const recent = times.filter((t) => t >= cutoff);
        if (recent.length > 0) kept.push([url, recent]);
      }
      await mkdir(this.#acmeDir, { recursive: true, mode: 0o700 });
      await writeFileAtomic(file, toJson({ orders: Object.fromEntries(kept) }), 0o600, this.#onStep);
    });
  }

  async ordersSince(directoryUrl: string, since: number): Promise<number> {
    this.#live();
    checkNonEmpty(directoryUrl, 'directoryUrl');
    const file = join(this.#acmeDir, 'orders.json');
    return this.#serial('orders', async () => {
      const times = parseOrderLog(await readJson(file), file).get(directoryUrl) ?? [];
      return times.filter((t) => t >= since).length;
    });
  }

  // ---- challenges (in memory: only this process answers them)

  async putChallenge(token: string, keyAuthorization: string): Promise<void> {
    this.#live();
    checkToken(token);
    checkNonEmpty(keyAuthorization, 'keyAuthorization');
    this.#challenges.set(token, keyAuthorization);
    this.#emit({ kind: 'challenge', token });
  }

  async getChallenge(token: string): Promise<string | null> {
    this.#live();
    checkToken(token);
    return this.#challenges.get(token) ?? null;
  }

  async deleteChallenge(token: string): Promise<void> {
    this.#live();
    checkToken(token);
    if (this.#challenges.delete(token)) this.#emit({ kind: 'challenge', token });
  }

  /** The pair must be readable and matching and name `hostname` (RFC 8737 §3); dates are not checked. */
  async putAlpnChallenge(challenge: AlpnChallenge): Promise<void> {
    this.#live();
    if (challenge === null || typeof challenge !== 'object') throw new StoreInputError('bad-input', 'putAlpnChallenge needs an AlpnChallenge');
    const hostname = checkHostname(challenge.hostname);
    const meta = describePair(challenge.certPem, challenge.keyPem, Date.now());
    if (!meta.names.includes(hostname)) {
      throw new CertRejected('hostname-not-covered', `the TLS-ALPN-01 certificate does not name ${hostname}: its names are ${meta.names.join(', ')}`);
    }
    this.#alpn.set(hostname, Object.freeze({ hostname, certPem: challenge.certPem, keyPem: challenge.keyPem }));
    this.#emit({ kind: 'alpn-challenge', hostname });
  }

  async getAlpnChallenge(hostname: string): Promise<AlpnChallenge | null> {
    this.#live();
    checkHostname(hostname);
    return this.#alpn.get(hostname) ?? null;
  }

  async deleteAlpnChallenge(hostname: string): Promise<void> {
    this.#live();
    checkHostname(hostname);
    if (this.#alpn.delete(hostname)) this.#emit({ kind: 'alpn-challenge', hostname });
  }

  // ---- locks (in memory: one node has no one to exclude but itself)

  async tryLock(name: string, owner: string, ttlMs: number): Promise<boolean> {
    this.#live();
    checkNonEmpty(name, 'lock name');
    checkNonEmpty(owner, 'lock owner');
    if (!isNum(ttlMs) || ttlMs <= 0) throw new StoreInputError('bad-input', 'lock ttlMs must be a positive number');
    const now = Date.now();
    const held = this.#locks.get(name);
    if (held !== undefined && held.owner !== owner && held.expiresAt > now) return false;
    this.#locks.set(name, { owner, expiresAt: now + ttlMs });
    return true;
  }

  async unlock(name: string, owner: string): Promise<void> {
    this.#live();
    if (this.#locks.get(name)?.owner === owner) this.#locks.delete(name);
  }

  // ---- watch, close

  watch(listener: (change: CertStoreChange) => void): () => void {
    this.#live();
    // A wrapper per call, so that the same function watched twice is unsubscribed once each.
    const entry = (change: CertStoreChange): void => listener(change);
    this.#watchers.add(entry);
    return () => void this.#watchers.delete(entry);
  }

  /** Waits for writes in progress; any call afterwards rejects. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all(this.#queues.values());
    this.#watchers.clear();
    this.#challenges.clear();
    this.#alpn.clear();
    this.#locks.clear();
  }

  // ---- internals

  #live(): void {
    if (this.#closed) throw new Error(`certificate store ${this.description} is closed`);
  }

  /**
   * Runs `fn` after every earlier call with the same key: a read never sees the generation a
   * concurrent write is about to remove, and read-modify-write files (the order log) lose nothing.
   */
  #serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const run = (this.#queues.get(key) ?? Promise.resolve()).then(fn);
    const tail = run.then(
      () => {},
      () => {},
    );
    this.#queues.set(key, tail);
    void tail.then(() => {
      if (this.#queues.get(key) === tail) this.#queues.delete(key);
    });
    return run;
  }

  #emit(change: CertStoreChange): void {
    for (const w of this.#watchers) {
      try {
        w(change);
      } catch (err) {
        // A watcher's bug must not turn a write that succeeded into a failure.
        this.#onWarning({ file: this.dir, message: `a watcher threw: ${(err as Error).message}` });
      }
    }
  }

  #warnSkip(file: string, err: unknown): void {
    const message = err instanceof CertStoreFileError ? err.message : `${file}: ${(err as Error).message}`;
    this.#onWarning({ file: err instanceof CertStoreFileError ? err.file : file, message: `${message}; skipped` });
  }

  #certRoot(source: StoredCertSource): string {
    return source === 'custom' ? this.dir : join(this.#acmeDir, 'certs');
  }

  #stateFile(hostname: string): string {
    return join(this.#acmeDir, 'states', `${dirNameOf(hostname)}.json`);
  }

  #accountFile(directoryUrl: string): string {
    // Hashed: a URL holds `/` and `:`; 128 bits are far from any collision.
    const id = createHash('sha256').update(directoryUrl).digest('hex').slice(0, 32);
    return join(this.#acmeDir, 'accounts', `${id}.json`);
  }

  async #readCert(hostname: string, source: StoredCertSource): Promise<StoredCert | null> {
    const root = this.#certRoot(source);
    const dir = await resolvePairDir(root, dirNameOf(hostname));
    if (dir === null) return null;
    const shown = join(root, dirNameOf(hostname));
    const chainName = chainFileName(source);
    const chainPem = await readText(join(dir, chainName), join(shown, chainName));
    const keyPem = await readText(join(dir, 'key.pem'), join(shown, 'key.pem'));
    const meta = await readMeta(dir, shown, chainName, chainPem, keyPem);
    return Object.freeze({ hostname, source, chainPem, keyPem, meta });
  }

  async #readState(hostname: string): Promise<IssuanceState | null> {
    const file = this.#stateFile(hostname);
    const raw = await readJson(file);
    if (raw === undefined) return null;
    const problem = stateProblem(raw);
    if (problem !== null) throw new CertStoreFileError(file, `not an issuance state: ${problem}`);
    const s = raw as IssuanceState;
    if (s.hostname !== hostname) throw new CertStoreFileError(file, `holds the state of ${String(s.hostname)}, not ${hostname}`);
    return copyState(s);
  }
}

function chainFileName(source: StoredCertSource): string {
  // cert.pem for custom: the name readCertDir and operators already use.
  return source === 'custom' ? 'cert.pem' : 'chain.pem';
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (err) {
    if (isMissing(err)) return [];
    throw err;
  }
}

/**
 * meta.json when it is at least as new as the chain; otherwise (an operator's directory, or a
 * chain replaced by hand after the store wrote it) parsed from the pair, dated by the chain file.
 */
async function readMeta(dir: string, shown: string, chainName: string, chainPem: string, keyPem: string): Promise<CertMeta> {
  const metaFile = join(dir, 'meta.json');
  const [metaStat, chainStat] = await Promise.all([
    stat(metaFile).catch((err: unknown) => {
      if (isMissing(err)) return null;
      throw new CertStoreFileError(join(shown, 'meta.json'), readProblem(err), err);
    }),
    stat(join(dir, chainName)).catch((err: unknown) => {
      throw new CertStoreFileError(join(shown, chainName), readProblem(err), err);
    }),
  ]);
  if (metaStat !== null && metaStat.mtimeMs >= chainStat.mtimeMs) {
    const shownMeta = join(shown, 'meta.json');
    const raw = await readJson(metaFile, shownMeta);
    const problem = raw === undefined ? 'disappeared while being read' : metaProblem(raw);
    if (problem !== null) throw new CertStoreFileError(shownMeta, `not certificate metadata: ${problem}`);
    return copyMeta(raw as CertMeta);
  }
  try {
    return describePair(chainPem, keyPem, Math.floor(chainStat.mtimeMs));
  } catch (err) {
    if (err instanceof CertRejected) throw new CertStoreFileError(shown, err.message, err);
    throw err;
  }
}
