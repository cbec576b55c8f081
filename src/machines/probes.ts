// One-shot service check probes. Each resolves to null on pass or a short reason on failure and
// never rejects. No connection reuse (agent: false): a check must prove the Machine accepts new
// connections, which a pooled socket would not.

import http from 'node:http';
import https from 'node:https';
import { isIP, connect } from 'node:net';
import type { HttpCheck } from '../config/types.ts';

const noop = (): void => {};

function hostHeader(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

export function tcpProbe(host: string, port: number, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    let done = false;
    const sock = connect({ host, port });
    const finish = (r: string | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => finish(`connect timed out after ${timeoutMs} ms`), timeoutMs);
    sock.once('connect', () => finish(null));
    sock.on('error', (e) => finish(e.message));
  });
}

/** 2xx and 3xx pass (Fly's rule); the body is never read. */
export function httpProbe(host: string, port: number, c: HttpCheck): Promise<string | null> {
  return new Promise((resolve) => {
    let done = false;
    const headers: Record<string, string> = {};
    let hasHost = false;
    for (const [k, v] of c.headers) {
      headers[k] = v;
      if (k.toLowerCase() === 'host') hasHost = true;
    }
    // Like any client hitting that address; a check's `headers` may set a virtual host instead
    // (https derives SNI from it).
    if (!hasHost) headers.host = hostHeader(host, port);
    const opts: https.RequestOptions = { host, port, method: c.method, path: c.path, headers, agent: false };
    if (c.protocol === 'https') opts.rejectUnauthorized = !c.tlsSkipVerify;
    const req = (c.protocol === 'https' ? https : http).request(opts, (res) => {
      res.on('error', noop);
      const s = res.statusCode ?? 0;
      finish(s >= 200 && s < 400 ? null : `HTTP ${s}`);
    });
    const finish = (r: string | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => finish(`no response within ${c.timeoutMs} ms`), c.timeoutMs);
    req.on('error', (e) => finish(e.message));
    req.end();
  });
}
