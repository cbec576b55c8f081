// `servers` of `[store]` (kind = "nats"): the seed list the NATS client dials.
//
// Checked here rather than left to the client: the client only complains when it dials, which
// for a typo in the second server of three may be never (it connects to the first one) until
// the day the first one is down.

import { isIPv6 } from 'node:net';

import type { Section } from './section.ts';
import { isHostname } from './valueRules.ts';

const SCHEME = 'nats://';
/** host:port, the host bracketed when it is IPv6; the scheme is stripped before this runs. */
const HOST_PORT = /^(?:\[(?<v6>[^\]]+)\]|(?<host>[^\s:/@[\]]+)):(?<port>\d{1,5})$/;
const SHAPE = '"nats://host:port" or "host:port" (IPv6 as "[::1]:4222")';

export function readServers(s: Section): string[] {
  const servers = s.stringList('servers');
  if (servers === undefined) return s.fail('servers', `missing required key: kind = "nats" needs the NATS servers to connect to, as ${SHAPE}`);
  if (servers.length === 0) s.fail('servers', `must list at least one NATS server, as ${SHAPE}`);
  const seen = new Map<string, string>();
  servers.forEach((written, i) => {
    const itemPath = s.itemPath('servers', i);
    const reason = serverProblem(written);
    if (reason !== undefined) s.failAt(itemPath, `${JSON.stringify(written)} ${reason}`);
    // The same server twice would only skew the client's random pick towards it.
    const same = written.toLowerCase().replace(SCHEME, '');
    const first = seen.get(same);
    if (first !== undefined) s.failAt(itemPath, `${JSON.stringify(written)} is listed twice (first on line ${s.lineOf(first)})`);
    seen.set(same, itemPath);
  });
  return servers;
}

/** Why `written` is not a server address, or undefined when it is one. */
function serverProblem(written: string): string | undefined {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(written);
  if (scheme !== null && scheme[0].toLowerCase() !== SCHEME) return `is not ${SHAPE}: only the nats:// scheme is supported`;
  const rest = scheme === null ? written : written.slice(scheme[0].length);
  // Credentials in a URL would be printed wherever servers are (logs, check-config).
  if (rest.includes('@')) return 'holds credentials: set token, user and pass, or creds_file in [store] instead';
  const match = HOST_PORT.exec(rest);
  if (match === null) {
    const hint = /^[^:[\]/]+$/.test(rest) ? ': add the port (NATS clients use 4222 by default)' : '';
    return `is not ${SHAPE}${hint}`;
  }
  const { v6, host, port } = match.groups!;
  if (v6 !== undefined ? !isIPv6(v6) : !isHostname(host!.toLowerCase())) return `is not ${SHAPE}: the host is not a valid host name or IP address`;
  const number = Number(port);
  if (number < 1 || number > 65535) return `is not ${SHAPE}: the port must be 1-65535`;
  return undefined;
}
