// Typed, frozen configuration. The loader (load.ts) is the only producer; everything else reads
// these shapes and never sees raw TOML. Durations are milliseconds, sizes are bytes.

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/** Where a key was found, so validation and reload errors can name file, key path and line. */
export interface SourceRef {
  readonly file: string;
  readonly line: number;
}

export interface Location {
  readonly lat: number;
  readonly lon: number;
}

/** A public port (the one apps declare in `[[services.ports]]`) and where this node binds it. */
export interface ListenConfig {
  readonly port: number;
  readonly host: string;
  readonly bindPort: number;
}

export interface AdminConfig {
  readonly host: string;
  readonly port: number;
  /** Bearer token for mutating endpoints; empty string = generated at start and logged once. */
  readonly token: string;
}

/** Spec section 9: every wait and buffer is bounded. Each has a config key under `[limits]`. */
export interface Limits {
  readonly maxHeaderBytes: number; // max_header_bytes, 431 PH02
  readonly maxHeaderCount: number; // max_header_count, 431 PH03
  readonly maxUriBytes: number; // max_uri_bytes, 414 PH04
  readonly headerReadTimeoutMs: number; // header_read_timeout, 408 PH05
  readonly idleTimeoutMs: number; // idle_timeout (downstream keep-alive between requests)
  readonly tlsHandshakeTimeoutMs: number; // tls_handshake_timeout, PT02
  readonly connectTimeoutMs: number; // upstream_connect_timeout, 504 PC02
  readonly responseTimeoutMs: number; // upstream_response_timeout, 504 PC04
  readonly upstreamIdleTimeoutMs: number; // upstream_idle_timeout (pooled keep-alive sockets)
  readonly upstreamMaxIdlePerMachine: number; // upstream_max_idle_per_machine
  readonly connectAttempts: number; // connect_attempts (1 = no retry)
  readonly retryBufferBytes: number; // retry_buffer_bytes: request body kept for replay on retry
  readonly replayBufferBytes: number; // replay_buffer_bytes (fly-replay, later issue)
  readonly queueLength: number; // queue_length per app, 503 PR04 when full
  readonly queueTimeoutMs: number; // queue_timeout, 503 PR05
  readonly wakeTimeoutMs: number; // wake_timeout, 503 PM03 (lifecycle issue)
  readonly autostopIntervalMs: number; // autostop_interval: period of the autostop pass
  readonly autostopIdleMs: number; // autostop_idle: how long a Machine must be idle before autostop takes it
  readonly stopDrainTimeoutMs: number; // stop_drain_timeout: how long a stop waits for in-flight work
  readonly maxConnectionsPerApp: number; // max_connections_per_app, 503 PR06
  readonly maxConnections: number; // max_connections (whole node)
  readonly shutdownTimeoutMs: number; // shutdown_timeout: drain deadline on SIGTERM
  readonly h2MaxConcurrentStreams: number; // h2_max_concurrent_streams
  readonly drainIdleTimeoutMs: number; // drain_idle_timeout: during shutdown, how long an idle keep-alive connection may still send a last request
  readonly tunnelIdleTimeoutMs: number; // tunnel_idle_timeout: WebSockets and raw TCP with no bytes either way
}

export type ChallengeType = 'tls-alpn-01' | 'http-01';

export interface ExternalAccountBinding {
  readonly kid: string;
  /** base64url HMAC key as the CA hands it out. */
  readonly hmacKey: string;
}

/** `[acme]` of the node config (spec section 7); defaults and checks in src/tls/acme/config.ts. */
export interface AcmeSettings {
  readonly directoryUrl: string;
  readonly email: string | null;
  /** Must be true: RFC 8555 §7.3 `termsOfServiceAgreed`. */
  readonly termsAgreed: boolean;
  readonly eab: ExternalAccountBinding | null;
  /** PEM bundle file that the CA's directory certificate chains to (private CAs, pebble). */
  readonly caFile: string | null;
  /** First type the CA offers wins. */
  readonly challenges: readonly ChallengeType[];
  /** Renew at notBefore + renewFraction × lifetime. */
  readonly renewFraction: number;
  /** ± this, at most 5 % of the lifetime, so that certificates issued together spread out. */
  readonly renewJitterMs: number;
  /** Failure backoff: min × 2^(failures-1), capped at max. */
  readonly backoffMinMs: number;
  readonly backoffMaxMs: number;
  /** Orders placed with the CA per rolling hour for this account (counted in the store). */
  readonly ordersPerHour: number;
  /** Global token bucket for on-demand issuance. */
  readonly onDemandPerMinute: number;
  readonly onDemandBurst: number;
  /** One on-demand trigger per host name per this interval. */
  readonly onDemandHostIntervalMs: number;
  /** Orders running at once. */
  readonly concurrency: number;
  /** Deadline of every single HTTP request to the CA. */
  readonly requestTimeoutMs: number;
  /** Deadline of one whole order (account, order, validation, finalize, download). */
  readonly orderTimeoutMs: number;
}

/**
 * `[store]` of the node config: where apps, Machines, nodes and certificates are shared. The
 * field names match src/store/config.ts (which validates and fills in the defaults).
 */
export type StoreSettings =
  | { readonly kind: 'embedded' }
  | {
      readonly kind: 'nats';
      /** `nats://host:port` or `host:port`; the client also learns cluster members from the servers. */
      readonly servers: readonly string[];
      readonly token?: string;
      readonly user?: string;
      readonly pass?: string;
      /** A NATS `.creds` file (JWT + nkey seed); read at connect. */
      readonly credsFile?: string;
      /** Buckets are `<prefix>_<collection>`, subjects `<prefix>.<subject>`: several clusters can share servers. */
      readonly bucketPrefix: string;
      /** KV replicas (1, 3 or 5); applied when a bucket is created, never to an existing one. */
      readonly replicas: number;
      /** First connection, per server tried. */
      readonly connectTimeoutMs?: number;
      /** Each KV operation (JetStream API request). */
      readonly opTimeoutMs?: number;
      /** Default for request(). */
      readonly requestTimeoutMs?: number;
      /** How often the client pings; `maxPingOut` unanswered pings mean the server is gone. */
      readonly pingIntervalMs?: number;
      readonly maxPingOut?: number;
      /** Reconnect backoff: the pause grows with the outage, between these bounds. */
      readonly reconnectMinMs?: number;
      readonly reconnectMaxMs?: number;
      /** How often a watch is checked against its bucket for a stall (store/natsMirror.ts). */
      readonly watchCheckMs?: number;
    };

/** Cluster timing (`[cluster]` of the node config); only used with a shared store. */
export interface ClusterSettings {
  /** How often this node writes its heartbeat to the store. */
  readonly heartbeatIntervalMs: number;
  /** A node whose heartbeat is older than this is dead: nobody routes to its Machines. */
  readonly nodeDeadAfterMs: number;
  /** How often changed per-Machine load is published to the other nodes. */
  readonly loadPublishIntervalMs: number;
  /** Store changes within this window are applied as one new snapshot. */
  readonly applyDebounceMs: number;
  /** Start/stop/suspend forwarded to a Machine's owner wait this long for the answer. */
  readonly ownerRequestTimeoutMs: number;
}

export interface NodeConfig {
  readonly file: string;
  readonly nodeId: string;
  readonly region: string;
  readonly location: Location | null;
  readonly defaultDomain: string;
  /** Absolute path of the directory holding one TOML file per app. */
  readonly appsDir: string;
  /** Absolute path of the certificate directory. */
  readonly certsDir: string;
  readonly logLevel: LogLevel;
  /** Host to bind public ports that have no `[[listen]]` entry. */
  readonly bindHost: string;
  readonly listen: readonly ListenConfig[];
  readonly admin: AdminConfig;
  readonly limits: Limits;
  /** `[acme]`: null when the section is absent (no ACME; certificates from certs/ and self-signed). */
  readonly acme: AcmeSettings | null;
  /** `[store]`: `embedded` (default: app files are the config) or `nats` (the cluster shares it). */
  readonly store: StoreSettings;
  readonly cluster: ClusterSettings;
  readonly sources: ReadonlyMap<string, SourceRef>;
}

export type Handler = 'tls' | 'http' | 'proxy_proto' | 'pg_tls';
export type TlsVersion = 'TLSv1.2' | 'TLSv1.3';

export interface TlsOptions {
  readonly alpn: readonly string[];
  readonly versions: readonly TlsVersion[];
  readonly defaultSelfSigned: boolean;
}

export interface ResponseHeaderRule {
  readonly name: string; // lower-case
  /** null removes the header; a list sets several values. */
  readonly values: readonly string[] | null;
}

export interface HttpOptions {
  readonly h2Backend: boolean;
  readonly idleTimeoutMs: number | null; // null = node limit
  readonly headersReadTimeoutMs: number | null;
  readonly compress: boolean;
  readonly responseHeaders: readonly ResponseHeaderRule[];
  readonly pristine: boolean;
}

export interface PortConfig {
  readonly port: number;
  readonly handlers: readonly Handler[];
  readonly forceHttps: boolean;
  readonly tls: TlsOptions;
  readonly http: HttpOptions;
  readonly proxyProtoVersion: 'v1' | 'v2';
  readonly source: SourceRef;
}

export type ConcurrencyType = 'connections' | 'requests';

export interface Concurrency {
  readonly type: ConcurrencyType;
  readonly softLimit: number;
  /** Infinity when unset. */
  readonly hardLimit: number;
}

export interface TcpCheck {
  readonly kind: 'tcp';
  readonly name: string;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly gracePeriodMs: number;
}

export interface HttpCheck {
  readonly kind: 'http';
  readonly name: string;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly gracePeriodMs: number;
  readonly method: string;
  readonly path: string;
  readonly protocol: 'http' | 'https';
  readonly tlsSkipVerify: boolean;
  readonly headers: ReadonlyMap<string, string>;
}

export type Check = TcpCheck | HttpCheck;

export type AutoStop = 'off' | 'stop' | 'suspend';

export interface ServiceConfig {
  /** Index in the app's service list; stable within one snapshot. */
  readonly index: number;
  readonly protocol: 'tcp';
  readonly internalPort: number;
  readonly ports: readonly PortConfig[];
  readonly concurrency: Concurrency;
  readonly autoStopMachines: AutoStop;
  readonly autoStartMachines: boolean;
  readonly minMachinesRunning: number;
  /** Per-region minimums (`min_machines_running_per_region`); a listed region overrides the primary's rule. */
  readonly minMachinesPerRegion: ReadonlyMap<string, number>;
  readonly checks: readonly Check[];
  readonly source: SourceRef;
}

export type DriverKind = 'static' | 'process' | 'machines-api';

/** Where a `machines-api` Machine is driven: an API shaped like the Fly Machines API. */
export interface MachinesApiConfig {
  /** Base URL, e.g. "http://10.0.0.5:9091" (petrel's own admin API is one such API). */
  readonly url: string;
  readonly token: string;
  /** Environment variable holding the token, read when the driver calls (api_token_env). */
  readonly tokenEnv: string | null;
  /** The app name on that API (default: this app's name). */
  readonly app: string;
}

export interface MachineConfig {
  readonly id: string;
  readonly app: string;
  readonly region: string;
  readonly driver: DriverKind;
  /** static: "host:port" of the Machine's primary internal port. */
  readonly address: string | null;
  /** process: argv; relative paths resolve against the app file's directory. */
  readonly cmd: readonly string[] | null;
  /** machines-api: the API that starts, stops and suspends this Machine. */
  readonly api: MachinesApiConfig | null;
  /**
   * The node that runs this Machine's driver (`node = "..."` in `[[machines]]`); null: the node
   * that deployed the app. Only meaningful with a shared store: with the embedded one every
   * Machine is this node's.
   */
  readonly node: string | null;
  readonly cwd: string;
  readonly env: ReadonlyMap<string, string>;
  readonly killSignal: NodeJS.Signals;
  readonly killTimeoutMs: number;
  readonly source: SourceRef;
}

/**
 * `[[certificates]]` in an app file: a name the app answers (through one of its wildcard
 * hostnames) that needs its own certificate. ACME orders it unless `acme = false`; a wildcard
 * name can only come from an imported certificate (ACME wildcards need DNS-01).
 */
export interface CertificateConfig {
  readonly hostname: string;
  readonly acme: boolean;
  readonly source: SourceRef;
}

export interface AppConfig {
  readonly name: string;
  readonly file: string;
  readonly primaryRegion: string;
  /** Lower-case hostnames, custom ones plus `<app>.<default_domain>`; may start with `*.`. */
  readonly hostnames: readonly string[];
  readonly services: readonly ServiceConfig[];
  readonly machines: readonly MachineConfig[];
  /** `[[certificates]]`: names beyond `hostnames` that need a certificate (see CertificateConfig). */
  readonly certificates: readonly CertificateConfig[];
  readonly killSignal: NodeJS.Signals;
  readonly killTimeoutMs: number;
  /** Hash of the app file's parsed content: reload uses it to tell changed apps from unchanged. */
  readonly fingerprint: string;
}

export interface Config {
  readonly node: NodeConfig;
  readonly apps: ReadonlyMap<string, AppConfig>;
}

/** A configuration error; `file`, `key` and `line` locate it for a human. */
export class ConfigError extends Error {
  readonly file: string;
  readonly key: string;
  readonly line: number;
  constructor(file: string, key: string, line: number, reason: string) {
    super(`${file}:${line}: ${key}: ${reason}`);
    this.name = 'ConfigError';
    this.file = file;
    this.key = key;
    this.line = line;
  }
}
