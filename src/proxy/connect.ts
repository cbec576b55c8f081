// Opening a TCP connection to a Machine, with a bounded connect time and errors mapped to
// stable codes whose `retryable` flag tells the caller it may try another Machine.

import net from 'node:net';
import { E, type ProxyErrorDef } from './errors.ts';

export class ConnectError extends Error {
  readonly def: ProxyErrorDef;
  constructor(def: ProxyErrorDef, detail: string) {
    super(detail);
    this.def = def;
  }
}

export function connectErrorDef(err: NodeJS.ErrnoException): ProxyErrorDef {
  switch (err.code) {
    case 'ECONNREFUSED':
      return E.CONNECT_REFUSED;
    case 'ETIMEDOUT':
      return E.CONNECT_TIMEOUT;
    default:
      return E.CONNECT_FAILED;
  }
}

/** Resolves with a connected socket (no timeout left armed) or rejects with a ConnectError. */
export function connectTo(host: string, port: number, timeoutMs: number, allowHalfOpen = false): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    // allowHalfOpen for raw TCP: a Machine that finishes sending may still be reading.
    const s = net.connect({ host, port, noDelay: true, allowHalfOpen });
    const onError = (err: NodeJS.ErrnoException) => {
      s.destroy();
      reject(new ConnectError(connectErrorDef(err), `${host}:${port}: ${err.code ?? err.message}`));
    };
    const onTimeout = () => {
      s.destroy();
      reject(new ConnectError(E.CONNECT_TIMEOUT, `${host}:${port}: no answer within ${timeoutMs} ms`));
    };
    s.setTimeout(timeoutMs, onTimeout);
    s.once('error', onError);
    s.once('connect', () => {
      s.setTimeout(0);
      s.off('timeout', onTimeout);
      s.off('error', onError);
      resolve(s);
    });
  });
}
