// The `machines-api` driver: Machines run elsewhere and are driven through an HTTP API shaped
// like the Fly Machines API (`POST /v1/apps/{app}/machines/{id}/start|stop|suspend`,
// `GET .../wait?state=&timeout=`, `GET .../{id}`); petrel's own admin API is one. After a start
// the API's answer says where the Machine is (`private_ip`, `ports`). Every call is bounded and
// retried on network errors and 5xx; a 4xx is final and reported with the API's error.

import type { AppConfig, MachinesApiConfig } from '../../config/types.ts';
import type { MachineDriver, MachineRuntime } from '../runtime.ts';

const CALL_TIMEOUT_MS = 10_000;
const WAIT_S = 60;
const ATTEMPTS = 3;

export class MachinesApiError extends Error {
  readonly status: number;
  constructor(message: string, status: number) {
    super(message);
    this.status = status;
  }
}

function apiOf(m: MachineRuntime): MachinesApiConfig {
  const api = m.config.api;
  if (api === null) throw new Error(`Machine ${m.id} has no api_url`);
  return api;
}

async function call(api: MachinesApiConfig, method: string, path: string, timeoutMs = CALL_TIMEOUT_MS): Promise<Record<string, unknown>> {
  const token = api.token || (api.tokenEnv !== null ? (process.env[api.tokenEnv] ?? '') : '');
  let last: Error = new Error('no attempt made');
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, 100 * 2 ** (attempt - 1)));
    let res: Response;
    try {
      res = await fetch(api.url + path, {
        method,
        headers: token ? { authorization: `Bearer ${token}` } : {},
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      last = new Error(`${method} ${api.url}${path}: ${(err as Error).message}`);
      continue; // network error or timeout: retry
    }
    const text = await res.text();
    let body: Record<string, unknown> = {};
    try {
      body = text ? (JSON.parse(text) as Record<string, unknown>) : {};
    } catch {
      // Not JSON: keep the text for the error message.
    }
    if (res.ok) return body;
    const reason = (body['error'] as { reason?: string } | undefined)?.reason ?? text.slice(0, 200);
    last = new MachinesApiError(`${method} ${api.url}${path}: ${res.status} ${reason}`, res.status);
    if (res.status < 500) throw last; // the API refused: retrying will not help
  }
  throw last;
}

const enc = encodeURIComponent;

export class MachinesApiDriver implements MachineDriver {
  readonly kind = 'machines-api' as const;
  readonly canSuspend = true;

  async start(m: MachineRuntime, _app: AppConfig): Promise<void> {
    const api = apiOf(m);
    const base = `/v1/apps/${enc(api.app)}/machines/${enc(m.id)}`;
    await call(api, 'POST', `${base}/start`);
    await call(api, 'GET', `${base}/wait?state=started&timeout=${WAIT_S}`, (WAIT_S + 5) * 1000);
    // Where the Machine is now (a process Machine gets new ports at every start).
    const info = await call(api, 'GET', base);
    const ip = typeof info['private_ip'] === 'string' ? info['private_ip'] : '';
    if (ip === '') throw new Error(`${api.url}${base}: the API did not say where the Machine is (private_ip)`);
    m.host = ip;
    const ports = new Map<number, number>();
    const raw = info['ports'];
    if (raw !== null && typeof raw === 'object') {
      for (const [internal, port] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof port === 'number') ports.set(Number(internal), port);
      }
    }
    m.ports = ports;
  }

  async stop(m: MachineRuntime): Promise<void> {
    const api = apiOf(m);
    const base = `/v1/apps/${enc(api.app)}/machines/${enc(m.id)}`;
    await call(api, 'POST', `${base}/stop`);
    await call(api, 'GET', `${base}/wait?state=stopped&timeout=${WAIT_S}`, (WAIT_S + 5) * 1000);
  }

  async suspend(m: MachineRuntime): Promise<void> {
    const api = apiOf(m);
    const base = `/v1/apps/${enc(api.app)}/machines/${enc(m.id)}`;
    await call(api, 'POST', `${base}/suspend`);
    await call(api, 'GET', `${base}/wait?state=suspended&timeout=${WAIT_S}`, (WAIT_S + 5) * 1000);
  }

  /** Fly's start on a suspended Machine resumes it; so does petrel's admin API. */
  async resume(m: MachineRuntime): Promise<void> {
    await this.start(m, undefined as unknown as AppConfig);
  }
}
