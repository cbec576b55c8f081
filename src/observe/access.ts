// The access log: one JSON line per request, in the same shape pino writes (level, time, pid,
// component), built by hand. pino's generic serialiser walks the object and escapes every
// value; here only the fields a client controls (host, path, reason) go through JSON.stringify,
// the rest are known-safe tokens and numbers. The line goes to pino's own destination, so it
// shares its buffering, ordering and flushing with every other log line.

import pino from 'pino';
import type { Exchange } from '../proxy/exchange.ts';
import type { Logger } from './log.ts';

const PREFIX = `{"level":"info","time":"`;
const PID = `","pid":${process.pid},"c":"access","id":"`;

interface Writable {
  write(s: string): unknown;
}

// Many lines share a millisecond under load: format the timestamp once per millisecond.
let isoMs = -1;
let isoText = '';
function isoNow(): string {
  const now = Date.now();
  if (now !== isoMs) {
    isoMs = now;
    isoText = new Date(now).toISOString();
  }
  return isoText;
}

function ms(v: number): number {
  return Math.round(v * 1000) / 1000;
}

export function writeAccessLine(access: Logger, x: Exchange, totalMs: number): void {
  const stream = (access as unknown as Record<symbol, Writable>)[pino.symbols.streamSym]!;
  const app = x.app;
  const slot = x.slot;
  const err = x.error;
  stream.write(
    PREFIX +
      isoNow() +
      PID +
      x.id +
      '","proto":"' +
      x.proto +
      '","client":"' +
      x.clientIp +
      '","app":"' +
      (app === null ? '' : app.config.name) +
      '","machine":"' +
      (slot === null ? '' : slot.machine.id) +
      '","region":"' +
      (slot === null ? '' : slot.machine.region) +
      '","method":' +
      JSON.stringify(x.method) +
      ',"host":' +
      JSON.stringify(x.host) +
      ',"path":' +
      JSON.stringify(x.target) +
      ',"status":' +
      x.status +
      ',"bytes_in":' +
      x.bytesIn +
      ',"bytes_out":' +
      x.bytesOut +
      ',"queue_ms":' +
      ms(x.queueMs) +
      ',"wake_ms":' +
      ms(x.wakeMs) +
      ',"connect_ms":' +
      ms(x.connectMs) +
      ',"upstream_ms":' +
      ms(x.upstreamMs) +
      ',"total_ms":' +
      ms(totalMs) +
      ',"retries":' +
      x.retries +
      ',"code":"' +
      (err === null ? '' : err.code) +
      '","reason":' +
      (err === null ? '""' : JSON.stringify(x.errorDetail || err.reason)) +
      '}\n',
  );
}
