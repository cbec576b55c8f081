// The HTTP transport under acme-client, replacing its axios one per client instance.
//
// Why not acme-client's own: it sends everything through one module-global axios instance, so
// trusting a private CA means mutating `acme.axios.defaults` for the whole process; its retry
// interceptor sleeps 5+10+15+20+25 s on a refused connection (a dead CA would hold an order for
// over a minute) and then throws the misleading `Cannot read properties of undefined (reading
// 'config')` instead of the network error (lab.md). Its HttpClient funnels every request through
// one method, `request(url, method, { data, headers })` returning `{ status, headers, data }`;
// replacing that method on the instance (installTransport) gives us, per client: our CA bundle,
// a deadline on every request, an abort signal, a bounded body, and the CA's problem documents.
// That method is not public API: installTransport checks it is there and fails loudly if a
// future acme-client moves it.

import http from 'node:http';
import https from 'node:https';
import { rootCertificates } from 'node:tls';

/** What acme-client's HttpClient.request returns (the part of an axios response it reads). */
export interface AcmeHttpResponse {
  readonly status: number;
  /** Lower-case names, as acme-client reads them (`replay-nonce`, `location`, `link`). */
  readonly headers: http.IncomingHttpHeaders;
  /** Parsed JSON for JSON bodies, else the text (the certificate chain), '' for HEAD. */
  readonly data: unknown;
}

/** An RFC 7807 problem document the CA answered with (RFC 8555 §6.7). */
export interface AcmeProblem {
  readonly status: number;
  readonly type: string;
  readonly detail: string;
}

/** What one order's requests saw, for classifying its outcome. */
export class OrderTrace {
  lastProblem: AcmeProblem | null = null;
  /** ms, from the last Retry-After on a 429/503. */
  retryAfterMs: number | null = null;
  /** Status of the last POST that got an answer; null when none did (see client.ts). */
  lastPostStatus: number | null = null;
}

// Certificate chains are a few KB and ACME JSON objects smaller still; anything near this is not
// an ACME server.
const MAX_BODY_BYTES = 1 << 20;

function retryAfterMs(value: string | undefined, now: number): number | null {
  if (value === undefined) return null;
  const secs = Number(value);
  if (Number.isFinite(secs) && secs >= 0) return secs * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

function hint(err: NodeJS.ErrnoException): string {
  const code = err.code ?? '';
  if (code.startsWith('ERR_TLS') || code.includes('CERT') || code === 'DEPTH_ZERO_SELF_SIGNED_CERT') {
    return ' (the directory certificate is not trusted: set the ACME CA bundle, ca_file)';
  }
  return '';
}

/** One per ACME directory: keep-alive agent with the CA bundle, shared by every order. */
export class AcmeHttp {
  readonly #agent: https.Agent;
  readonly #plainAgent: http.Agent;
  readonly #timeoutMs: number;

  constructor(caPem: string | null, timeoutMs: number) {
    // The bundle adds to Node's roots (like NODE_EXTRA_CA_CERTS) instead of replacing them, so
    // setting it for a private CA cannot break a public one.
    const ca = caPem === null ? undefined : [...rootCertificates, caPem];
    this.#agent = new https.Agent({ keepAlive: true, maxSockets: 4, ca });
    this.#plainAgent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    this.#timeoutMs = timeoutMs;
  }

  request(
    url: string,
    method: string,
    body: unknown,
    headers: Record<string, string>,
    signal: AbortSignal,
    trace: OrderTrace,
  ): Promise<AcmeHttpResponse> {
    const verb = method.toUpperCase();
    const payload = body === undefined || body === null ? null : Buffer.from(JSON.stringify(body));
    const target = new URL(url);
    const isHttps = target.protocol === 'https:';
    const lib = isHttps ? https : http;
    return new Promise<AcmeHttpResponse>((resolve, reject) => {
      if (signal.aborted) {
        reject(new Error(`ACME ${verb} ${url}: aborted (${String(signal.reason)})`));
        return;
      }
      const req = lib.request(target, {
        method: verb,
        agent: isHttps ? this.#agent : this.#plainAgent,
        headers: {
          ...headers,
          'user-agent': 'petrel',
          ...(payload !== null ? { 'content-length': String(payload.length) } : {}),
        },
        signal,
      });
      // One deadline for the whole exchange (connect, TLS, response, body), not an idle timer.
      const timer = setTimeout(() => req.destroy(new Error(`timed out after ${this.#timeoutMs} ms`)), this.#timeoutMs);
      const fail = (err: NodeJS.ErrnoException): void => {
        clearTimeout(timer);
        reject(new Error(`ACME ${verb} ${url}: ${err.message}${hint(err)}`));
      };
      req.on('error', fail);
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_BODY_BYTES) {
            req.destroy(new Error(`response body over ${MAX_BODY_BYTES} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on('error', fail);
        res.on('end', () => {
          clearTimeout(timer);
          const status = res.statusCode ?? 0;
          const text = Buffer.concat(chunks).toString('utf8');
          const type = String(res.headers['content-type'] ?? '');
          let data: unknown = text;
          if (type.includes('json') && text !== '') {
            try {
              data = JSON.parse(text);
            } catch {
              reject(new Error(`ACME ${verb} ${url}: HTTP ${status} with malformed JSON`));
              return;
            }
          }
          if (verb === 'POST') trace.lastPostStatus = status;
          if (status >= 400 && data !== null && typeof data === 'object') {
            const p = data as { type?: unknown; detail?: unknown };
            trace.lastProblem = {
              status,
              type: typeof p.type === 'string' ? p.type : '',
              detail: typeof p.detail === 'string' ? p.detail : text.slice(0, 300),
            };
          }
          if (status === 429 || status === 503) {
            const ra = retryAfterMs(res.headers['retry-after'], Date.now());
            if (ra !== null) trace.retryAfterMs = ra;
          }
          resolve({ status, headers: res.headers, data });
        });
      });
      req.end(payload ?? undefined);
    });
  }

  /** Closes idle keep-alive sockets; a request in flight still finishes or fails. */
  close(): void {
    this.#agent.destroy();
    this.#plainAgent.destroy();
  }
}

interface HttpClientInternals {
  request?: unknown;
}

/**
 * Points one acme-client Client at `http` for one order (or account registration): every
 * request it makes carries `signal` and reports into `trace`.
 */
export function installTransport(client: object, acmeHttp: AcmeHttp, signal: AbortSignal, trace: OrderTrace): void {
  const inner = (client as { http?: HttpClientInternals }).http;
  if (inner === undefined || typeof inner.request !== 'function') {
    throw new Error('acme-client internals changed: Client#http.request not found (petrel supports acme-client 5.x)');
  }
  inner.request = (url: string, method: string, opts: { data?: unknown; headers?: Record<string, string> } = {}) =>
    acmeHttp.request(url, method, opts.data, { 'content-type': 'application/jose+json', ...(opts.headers ?? {}) }, signal, trace);
}
