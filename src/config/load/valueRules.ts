// Value rules more than one part of the config shares: regions, variable names, host names,
// "host:port" addresses and HTTP header names and values.

import type { Section } from './section.ts';

export const REGION = /^[a-z0-9-]+$/;
export const REGION_RULE = 'use lower-case letters, digits and dashes, like "ams"';
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const ENV_NAME_RULE = 'use letters, digits and underscores, not starting with a digit';
/** RFC 9110 section 5.6.2 token: header names and methods. */
export const HTTP_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HOST_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
/** Header values end up on the wire: CR/LF would let a config inject headers, NUL is never valid. */
const UNSAFE_HEADER_VALUE = /[\r\n\0]/;

export function isHostname(name: string): boolean {
  return name.length <= 253 && name.split('.').every((label) => HOST_LABEL.test(label));
}

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** "host:port" or "[v6]:port"; the host is returned without brackets. */
function parseHostPort(text: string, minPort: number): HostPort | undefined {
  const match = /^\[([0-9A-Fa-f:.%a-z]+)\]:(\d{1,5})$/.exec(text) ?? /^([^\s:[\]/]+):(\d{1,5})$/.exec(text);
  if (match === null) return undefined;
  const port = Number(match[2]);
  return port >= minPort && port <= 65535 ? { host: match[1]!, port } : undefined;
}

export function readHostPort(s: Section, key: string, minPort: number): HostPort | undefined {
  const value = s.string(key);
  if (value === undefined) return undefined;
  const parsed = parseHostPort(value, minPort);
  if (parsed === undefined) {
    s.fail(key, `${JSON.stringify(value)} is not "host:port" (IPv6 as "[::1]:port", port ${minPort}-65535)`);
  }
  return parsed;
}

/** Header names: a token; case-insensitive, so duplicates are found after lower-casing. */
export function readHeaderName(s: Section, key: string, fullPath: string, seen: Set<string>): string {
  if (!HTTP_TOKEN.test(key)) s.failAt(fullPath, `${JSON.stringify(key)} is not a valid HTTP header name`);
  const name = key.toLowerCase();
  if (seen.has(name)) s.failAt(fullPath, `header ${JSON.stringify(key)} is listed twice (names are case-insensitive)`);
  seen.add(name);
  return name;
}

export function checkHeaderValue(s: Section, fullPath: string, value: string): string {
  if (UNSAFE_HEADER_VALUE.test(value)) s.failAt(fullPath, 'a header value cannot contain CR, LF or NUL');
  return value;
}
