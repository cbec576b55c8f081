// Health checks of a service: `[[services.tcp_checks]]`, `[[services.http_checks]]` and the
// `[[http_service.checks]]` shorthand.

import type { HttpCheck, TcpCheck } from '../types.ts';
import { frozenMap } from './freeze.ts';
import { describeValue } from './section.ts';
import type { Section } from './section.ts';
import { checkHeaderValue, HTTP_TOKEN, readHeaderName } from './valueRules.ts';

/** Check durations are plain durations: a bare number is milliseconds. */
function readCheckTimings(s: Section): { gracePeriodMs: number; intervalMs: number; timeoutMs: number } {
  return {
    gracePeriodMs: s.durationMs('grace_period', 'ms', true) ?? 1_000,
    intervalMs: s.durationMs('interval', 'ms') ?? 15_000,
    timeoutMs: s.durationMs('timeout', 'ms') ?? 2_000,
  };
}

export function readTcpCheck(s: Section, index: number): TcpCheck {
  const check: TcpCheck = { kind: 'tcp', name: `tcp-${index}`, ...readCheckTimings(s) };
  s.finish();
  return check;
}

export function readHttpCheck(s: Section, index: number): HttpCheck {
  const timings = readCheckTimings(s);
  const method = (s.matching('method', HTTP_TOKEN, 'give an HTTP method such as "GET"') ?? 'GET').toUpperCase();
  const checkPath = s.matching('path', /^\/[^\s]*$/, 'give a path starting with "/" and without spaces') ?? '/';
  const protocol = s.oneOf('protocol', ['http', 'https'] as const) ?? 'http';
  const tlsSkipVerify = s.boolean('tls_skip_verify') ?? false;
  const headers = readCheckHeaders(s.section('headers'));
  s.finish();
  return { kind: 'http', name: `http-${index}`, ...timings, method, path: checkPath, protocol, tlsSkipVerify, headers };
}

function readCheckHeaders(s: Section): ReadonlyMap<string, string> {
  const seen = new Set<string>();
  return frozenMap(
    s.entries().map(({ key, value, path: itemPath }) => {
      const name = readHeaderName(s, key, itemPath, seen);
      if (typeof value !== 'string') s.failAt(itemPath, `expected a string, got ${describeValue(value)}`);
      return [name, checkHeaderValue(s, itemPath, value)] as const;
    }),
  );
}
