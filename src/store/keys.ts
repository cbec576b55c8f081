// Validation and encoding of keys and subjects, shared by both implementations so they refuse the
// same inputs.
//
// NATS KV keys and subjects allow only `[-/_=.A-Za-z0-9]` with `.` separating non-empty tokens,
// while our natural keys are hostnames (`*.example.com`), app names and ids. encodeKey() keeps
// the common characters readable (so `nats kv ls` shows `_2a.example.com`) and escapes every
// other UTF-8 byte as `_xx` (lower-case hex). `_` itself is always escaped, so decoding is
// unambiguous, and an encoded key never starts with `_kv` (reserved by some NATS clients).

import { StoreError } from './errors.ts';
import { COLLECTIONS, MAX_KEY_BYTES, type Collection } from './types.ts';

const LITERAL = /^[-/=A-Za-z0-9]$/;
const TOKEN = /^[-_=/A-Za-z0-9]+$/;
const HEX2 = /^[0-9a-f]{2}$/;
const MAX_SUBJECT_CHARS = 512;
const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export function checkCollection(coll: string): asserts coll is Collection {
  if (!(COLLECTIONS as readonly string[]).includes(coll)) {
    throw new StoreError('invalid', `unknown collection ${JSON.stringify(coll)}`);
  }
}

export function checkKey(key: unknown): asserts key is string {
  if (typeof key !== 'string' || key.length === 0) throw new StoreError('invalid', 'key must be a non-empty string');
  // A lone surrogate would encode to U+FFFD and collide with other keys.
  if (!key.isWellFormed()) throw new StoreError('invalid', 'key is not well-formed Unicode');
  if (utf8.encode(key).length > MAX_KEY_BYTES) {
    throw new StoreError('invalid', `key longer than ${MAX_KEY_BYTES} bytes`);
  }
}

function escapeBytes(ch: string): string {
  let out = '';
  for (const b of utf8.encode(ch)) out += '_' + b.toString(16).padStart(2, '0');
  return out;
}

function escape(s: string, keepDots: boolean): string {
  const chars = Array.from(s);
  let out = '';
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i]!;
    if (LITERAL.test(ch)) out += ch;
    // A dot stays a token separator only where it cannot make an empty token.
    else if (ch === '.' && keepDots && out.length > 0 && !out.endsWith('.') && i < chars.length - 1) out += ch;
    else out += escapeBytes(ch);
  }
  return out;
}

/** The KV key for a natural key (which must have passed checkKey). */
export function encodeKey(key: string): string {
  return escape(key, true);
}

/** The natural key for an encoded one, or null when it is not one we would have written. */
export function decodeKey(encoded: string): string | null {
  const bytes: number[] = [];
  for (let i = 0; i < encoded.length; i++) {
    const c = encoded[i]!;
    if (c === '_') {
      const hex = encoded.slice(i + 1, i + 3);
      if (!HEX2.test(hex)) return null;
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else if (c === '.' || LITERAL.test(c)) {
      bytes.push(c.charCodeAt(0));
    } else {
      return null;
    }
  }
  let key: string;
  try {
    key = strictUtf8.decode(Uint8Array.from(bytes));
  } catch {
    return null;
  }
  // Only the canonical spelling maps back, so two stored keys never decode to one natural key.
  return key.length > 0 && encodeKey(key) === encoded ? key : null;
}

/** One subject token for a natural string (dots escaped too), e.g. a hostname or app name. */
export function subjectToken(s: string): string {
  if (s.length === 0) throw new StoreError('invalid', 'subject token must not be empty');
  return escape(s, false);
}

/** Refuses subjects that are not dot-separated tokens; wildcards only where `wildcards`. */
export function checkSubject(subject: unknown, wildcards: boolean): asserts subject is string {
  if (typeof subject !== 'string' || subject.length === 0 || subject.length > MAX_SUBJECT_CHARS) {
    throw new StoreError('invalid', `subject must be 1..${MAX_SUBJECT_CHARS} characters`);
  }
  const tokens = subject.split('.');
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (TOKEN.test(t)) continue;
    if (wildcards && (t === '*' || (t === '>' && i === tokens.length - 1))) continue;
    throw new StoreError('invalid', `bad subject ${JSON.stringify(subject)} (tokens of [-_=/A-Za-z0-9]${wildcards ? ', * or a final >' : ''})`);
  }
}

/** NATS subject matching: `*` is one token, a final `>` is one or more. */
export function matchSubject(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== '*' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

/** Revisions start at 1, so 0 can never be "the current one" (NATS would read 0 as "absent"). */
export function checkRevision(revision: unknown): void {
  if (typeof revision !== 'number' || !Number.isSafeInteger(revision) || revision < 1) {
    throw new StoreError('invalid', 'revision must be a positive integer');
  }
}

export function checkTimeout(ms: unknown): number {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms <= 0) throw new StoreError('invalid', 'timeoutMs must be a positive number');
  return ms;
}
