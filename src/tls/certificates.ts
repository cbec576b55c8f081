// The node's certificates (spec section 7), control plane: the certificate store under certs/,
// the ACME manager when `[acme]` is configured, the challenge answers the listeners read, the
// cert table every snapshot carries, and what the admin API shows and changes.
//
// Sources of the cert table, best first for a name: custom certificates (certs/<name>/, made by
// an operator or imported through the admin API), ACME ones (certs/_acme/), then the self-signed
// default for `default_self_signed` ports. The table is rebuilt whenever the store changes (an
// order completed, an import, a delete) and published by the daemon as a new snapshot; an
// expiring certificate keeps serving until its replacement is stored.

import type { AppConfig, Config } from '../config/types.ts';
import type { Logger } from '../observe/log.ts';
import { ChallengeSync } from './acme/challengeSync.ts';
import type { OrderOutcome } from './acme/client.ts';
import { AcmeManager, type AcmeHostStatus } from './acme/manager.ts';
import type { CertSource, CertTable } from './certTable.ts';
import { ChallengeBook } from './challenges.ts';
import { loadCertTable, selfSignedHostnames } from './load.ts';
import type { CertStore } from './store/certStore.ts';
import { FileCertStore } from './store/fileStore.ts';
import { CertRejected, inspectPair, namesCover } from './store/inspect.ts';

/** NATS carries a change to every node in about a millisecond; this is a wide margin on that. */
const CLUSTER_CHALLENGE_SETTLE_MS = 250;

/** Coalesces bursts of store events (a renewal writes key, chain and state) into one rebuild. */
const REBUILD_DEBOUNCE_MS = 20;

/** What the admin API shows for one host name of an app. */
export interface CertificateStatus {
  readonly hostname: string;
  /** active: a certificate serves it; pending/failed: ACME is working on it; missing: nothing
   *  serves it but the default certificate (or PT05). */
  readonly status: 'active' | 'pending' | 'failed' | 'missing';
  /** Where the certificate that serves the name now comes from. */
  readonly source: 'custom' | 'acme' | null;
  /** ACME manages this name (it orders and renews it). */
  readonly acme: boolean;
  readonly issuer: string | null;
  readonly not_after: string | null;
  readonly last_error: string | null;
  readonly next_attempt_at: string | null;
  readonly ordering: boolean;
  readonly waiting_for: string | null;
}

/** An admin request refused: HTTP status, PA code and a reason for the client. */
export class CertificateRequestError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, reason: string) {
    super(reason);
    this.status = status;
    this.code = code;
  }
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

/** Every name an app needs a certificate for: its hostnames and its `[[certificates]]`. */
function appCertificateNames(app: AppConfig): string[] {
  return [...new Set([...app.hostnames, ...app.certificates.map((c) => c.hostname)])];
}

/** Names ACME orders for: exact names only (wildcards need DNS-01), never localhost ones. */
function acmeNames(config: Config): Set<string> {
  const out = new Set<string>();
  for (const app of config.apps.values()) {
    for (const h of app.hostnames) if (!h.startsWith('*.')) out.add(h);
    for (const c of app.certificates) if (c.acme) out.add(c.hostname);
  }
  for (const h of out) if (h === 'localhost' || h.endsWith('.localhost')) out.delete(h);
  return out;
}

export class Certificates {
  readonly store: CertStore;
  /** Read by the listeners (data plane) to answer HTTP-01 and TLS-ALPN-01 validations. */
  readonly book: ChallengeBook;
  private readonly sync: ChallengeSync;
  private readonly log: Logger;
  private readonly onOrder: (outcome: OrderOutcome) => void;
  private acme: AcmeManager | null;
  private acmeKey: string;
  /**
   * The file store keeps custom certificates in certs/<host>/, which the directory scan already
   * reads; a shared store holds them itself, so the table takes them from there.
   */
  private readonly customOnDisk: boolean;
  private config: Config;
  /** The table last built, for `hasCustom` and status. */
  private table: CertTable | null;
  private readonly listeners: (() => void)[];
  private rebuildTimer: NodeJS.Timeout | null;
  private unwatch: (() => void) | null;

  private constructor(store: CertStore, config: Config, log: Logger, onOrder: (outcome: OrderOutcome) => void, customOnDisk: boolean) {
    this.store = store;
    this.customOnDisk = customOnDisk;
    this.book = new ChallengeBook();
    // A shared store: give the other nodes a moment to learn a challenge before the CA validates.
    this.sync = new ChallengeSync(store, this.book, log, customOnDisk ? 0 : CLUSTER_CHALLENGE_SETTLE_MS);
    this.log = log;
    this.onOrder = onOrder;
    this.acme = null;
    this.acmeKey = '';
    this.config = config;
    this.table = null;
    this.listeners = [];
    this.rebuildTimer = null;
    this.unwatch = null;
  }

  /**
   * `shared`: the cluster's certificate store (every node sees every certificate and challenge);
   * without it, the file store under certs/.
   */
  static async open(config: Config, log: Logger, onOrder: (outcome: OrderOutcome) => void, shared?: CertStore): Promise<Certificates> {
    const store =
      shared ??
      (await FileCertStore.open(config.node.certsDir, {
        onWarning: (w) => log.warn({ file: w.file }, `certificate store: ${w.message}`),
      }));
    const c = new Certificates(store, config, log, onOrder, shared === undefined);
    // Every node answers validations, ACME on or off: another node may have placed the order.
    c.sync.start();
    c.unwatch = store.watch((change) => {
      if (change.kind === 'cert') c.changed();
    });
    return c;
  }

  /** Called (debounced) when the stored certificates changed: the daemon publishes a new table. */
  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  private changed(): void {
    if (this.rebuildTimer !== null) return;
    this.rebuildTimer = setTimeout(() => {
      this.rebuildTimer = null;
      for (const l of this.listeners) l();
    }, REBUILD_DEBOUNCE_MS);
  }

  /** The cert table for `config`: custom and operator certificates, ACME ones, self-signed. */
  async buildTable(config: Config): Promise<CertTable> {
    const acme: CertSource[] = [];
    for (const c of await this.store.listCerts()) {
      if (c.source === 'acme') acme.push({ label: `_acme/${c.hostname}`, origin: 'acme', certPem: c.chainPem, keyPem: c.keyPem });
      else if (!this.customOnDisk) acme.push({ label: `store/${c.hostname}`, origin: 'custom', certPem: c.chainPem, keyPem: c.keyPem });
    }
    const res = await loadCertTable(config.node.certsDir, selfSignedHostnames(config), acme);
    for (const w of res.warnings) this.log.warn({ cert: w.label }, w.message);
    this.table = res.table;
    this.log.info(
      { certs: res.table.entries.length, acme: acme.length, selfSigned: res.table.defaultEntry !== null, generated: res.selfSignedGenerated },
      'certificates loaded',
    );
    return res.table;
  }

  /** Starts, restarts (settings changed) or reconciles (names changed) the ACME manager. */
  async configure(config: Config): Promise<void> {
    this.config = config;
    const settings = config.node.acme;
    const key = settings === null ? '' : JSON.stringify(settings);
    if (key !== this.acmeKey && this.acme !== null) {
      await this.acme.stop();
      this.acme = null;
    }
    this.acmeKey = key;
    if (settings === null) return;
    if (this.acme !== null) {
      await this.acme.reconcile();
      return;
    }
    const manager = new AcmeManager({
      settings,
      store: this.store,
      challenges: this.sync,
      hostnames: () => acmeNames(this.config),
      hasCustom: (h) => this.table?.lookup(h)?.origin === 'custom',
      onCertificate: () => this.changed(),
      onOrder: this.onOrder,
      log: this.log,
      nodeId: config.node.nodeId,
    });
    this.acme = manager;
    await manager.start();
  }

  /** Handshake found no certificate for `hostname` (a name of a configured app): order it soon. */
  onMiss(hostname: string): void {
    this.acme?.requestOnDemand(hostname);
  }

  /** Every configured name and the notAfter of the certificate serving it (metrics). */
  forEachCertificate(fn: (hostname: string, notAfterMs: number) => void): void {
    const table = this.table;
    if (table === null) return;
    for (const app of this.config.apps.values()) {
      for (const h of appCertificateNames(app)) {
        const e = table.lookup(h);
        if (e !== null) fn(h, e.notAfter);
      }
    }
  }

  status(app: AppConfig, hostname: string): CertificateStatus {
    const served = this.table?.lookup(hostname) ?? null;
    const managed: AcmeHostStatus | null = this.acme?.status(hostname) ?? null;
    const source = served === null ? null : served.origin === 'custom' ? 'custom' : served.origin === 'acme' ? 'acme' : null;
    let status: CertificateStatus['status'] = source === null ? 'missing' : 'active';
    // A custom certificate settles the name; otherwise ACME's view (pending, failed) says more.
    if (managed !== null && source !== 'custom') status = managed.status;
    return {
      hostname,
      status,
      source,
      acme: managed !== null,
      issuer: served?.issuer ?? managed?.issuer ?? null,
      not_after: iso(served?.notAfter ?? managed?.notAfter ?? null),
      last_error: managed?.lastError ?? null,
      next_attempt_at: source === 'custom' ? null : iso(managed?.nextAttemptAt ?? null),
      ordering: managed?.ordering ?? false,
      waiting_for: managed?.waitingFor ?? null,
    };
  }

  statusAll(app: AppConfig): CertificateStatus[] {
    return appCertificateNames(app)
      .sort()
      .map((h) => this.status(app, h));
  }

  /** The name as the app knows it, or a 404 naming the app's names. */
  appHostname(app: AppConfig, hostname: string): string {
    const h = hostname.toLowerCase();
    if (appCertificateNames(app).includes(h)) return h;
    throw new CertificateRequestError(404, 'PA14', `${hostname} is not a certificate name of app ${app.name} (names: ${appCertificateNames(app).join(', ')})`);
  }

  /** `POST .../certificates/acme`: order now (the hourly cap still holds). */
  requestAcme(app: AppConfig, hostname: string): CertificateStatus {
    const h = this.appHostname(app, hostname);
    if (this.acme === null) throw new CertificateRequestError(409, 'PA16', 'ACME is not configured on this node ([acme] in the node config)');
    const r = this.acme.requestIssuance(h);
    if (r === 'not-configured') throw new CertificateRequestError(409, 'PA16', `${h} cannot be ordered with ACME (wildcard names need an imported certificate)`);
    return this.status(app, h);
  }

  /**
   * `POST .../certificates/custom`: checks the pair (readable, key matches, names the host, not
   * expired) and stores it; it then wins over any ACME certificate for the name.
   */
  async importCustom(app: AppConfig, hostname: string, chainPem: string, keyPem: string): Promise<void> {
    // Any name the app answers: its own names, or a name under one of its wildcards.
    const h = hostname.toLowerCase();
    if (!namesCover(app.hostnames, h) && !appCertificateNames(app).includes(h)) {
      throw new CertificateRequestError(404, 'PA14', `${hostname} is not a host name of app ${app.name} (names: ${appCertificateNames(app).join(', ')})`);
    }
    let meta;
    try {
      meta = inspectPair(chainPem, keyPem, { hostname: h });
    } catch (err) {
      if (err instanceof CertRejected) throw new CertificateRequestError(422, 'PA15', `certificate refused (${err.reason}): ${err.message}`);
      throw err;
    }
    await this.store.putCert({ hostname: h, source: 'custom', chainPem, keyPem, meta });
    this.log.info({ hostname: h, app: app.name, issuer: meta.issuer, not_after: iso(meta.notAfter) }, 'custom certificate imported');
  }

  /** `DELETE .../certificates/{hostname}`: removes stored certificates; ACME orders anew if it manages the name. */
  async remove(app: AppConfig, hostname: string): Promise<{ deleted: string[] }> {
    const h = this.appHostname(app, hostname);
    const deleted: string[] = [];
    for (const source of ['custom', 'acme'] as const) if (await this.store.deleteCert(h, source)) deleted.push(source);
    await this.store.deleteState(h);
    if (deleted.length > 0) this.log.info({ hostname: h, app: app.name, deleted }, 'certificates deleted');
    // The manager asks the table whether a custom certificate covers the name: rebuild it first.
    await this.buildTable(this.config);
    await this.acme?.reconcile();
    return { deleted };
  }

  async close(): Promise<void> {
    if (this.rebuildTimer !== null) clearTimeout(this.rebuildTimer);
    this.unwatch?.();
    await this.acme?.stop();
    await this.sync.stop();
    await this.store.close();
  }
}
