// Section: typed reads of one TOML table, with key paths and lines for every error.
//
// A Section remembers which keys its reader asked for, so that whatever is left over when the
// reader calls `finish()` is an unknown key: that is how a typo becomes a ConfigError naming
// file, key path and line instead of a silent fallback to a default.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseDuration, parseSize } from '../durations.ts';
import { indexPath, isTomlTable, keyPath, TOP_LEVEL } from '../toml.ts';
import type { TomlDocument, TomlTable, TomlValue } from '../toml.ts';
import { ConfigError } from '../types.ts';
import type { SourceRef } from '../types.ts';

/** Node timers cannot wait longer than 2^31-1 ms; a longer setTimeout fires after 1 ms instead. */
const MAX_DURATION_MS = 2 ** 31 - 1;

export class Section {
  readonly file: string;
  /** Key path of this table ('' for the document root). */
  readonly path: string;
  /** False for a table the file does not have: reads then return undefined and defaults apply. */
  readonly present: boolean;
  private readonly doc: TomlDocument;
  private readonly table: TomlTable;
  /** Line reported for an absent table: its parent's. */
  private readonly fallbackLine: number;
  /** Every key a read asked for; the rest are unknown keys. */
  private readonly known = new Set<string>();

  constructor(file: string, doc: TomlDocument, sectionPath = '', table = doc.value, present = true, fallbackLine = 1) {
    this.file = file;
    this.doc = doc;
    this.path = sectionPath;
    this.table = table;
    this.present = present;
    this.fallbackLine = fallbackLine;
  }

  /** Line of this table's header; an absent table reports its parent's. */
  get line(): number {
    return this.doc.lines.get(this.path) ?? this.fallbackLine;
  }

  source(): SourceRef {
    return { file: this.file, line: this.line };
  }

  at(key: string): string {
    return keyPath(this.path, key);
  }

  itemPath(key: string, index: number): string {
    return indexPath(this.at(key), index);
  }

  lineOf(fullPath: string): number {
    return this.doc.lines.get(fullPath) ?? this.line;
  }

  /** Fails at a key of this table (its line, or the table's line when the key is missing). */
  fail(key: string, reason: string): never {
    return this.failAt(this.at(key), reason);
  }

  /** Fails about this table as a whole. */
  failHere(reason: string): never {
    return this.failAt(this.path === '' ? TOP_LEVEL : this.path, reason);
  }

  failAt(fullPath: string, reason: string): never {
    throw new ConfigError(this.file, fullPath, this.lineOf(fullPath), reason);
  }

  has(key: string): boolean {
    return this.value(key) !== undefined;
  }

  value(key: string): TomlValue | undefined {
    this.known.add(key);
    return this.table[key];
  }

  require<T>(key: string, value: T | undefined): T {
    if (value === undefined) this.fail(key, 'missing required key');
    return value;
  }

  string(key: string): string | undefined {
    const value = this.value(key);
    if (value === undefined || typeof value === 'string') return value;
    return this.fail(key, `expected a string, got ${describeValue(value)}`);
  }

  /** A string matching `pattern`; `rule` tells the reader what is allowed. */
  matching(key: string, pattern: RegExp, rule: string): string | undefined {
    const value = this.string(key);
    if (value !== undefined && !pattern.test(value)) this.fail(key, `${JSON.stringify(value)} is not valid: ${rule}`);
    return value;
  }

  oneOf<T extends string>(key: string, allowed: readonly T[]): T | undefined {
    const value = this.string(key);
    if (value === undefined || (allowed as readonly string[]).includes(value)) return value as T | undefined;
    return this.fail(key, `must be one of ${quoteList(allowed)}, got ${JSON.stringify(value)}`);
  }

  boolean(key: string): boolean | undefined {
    const value = this.value(key);
    if (value === undefined || typeof value === 'boolean') return value;
    return this.fail(key, `expected true or false, got ${describeValue(value)}`);
  }

  number(key: string, min: number, max: number): number | undefined {
    const value = this.value(key);
    if (value === undefined) return undefined;
    if (typeof value !== 'number' || Number.isNaN(value)) this.fail(key, `expected a number, got ${describeValue(value)}`);
    if (value < min || value > max) this.fail(key, `must be between ${min} and ${max}, got ${value}`);
    return value;
  }

  integer(key: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
    const value = this.value(key);
    if (value === undefined) return undefined;
    if (typeof value !== 'number' || !Number.isInteger(value)) this.fail(key, `expected an integer, got ${describeValue(value)}`);
    if (value < min || value > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `between ${min} and ${max}`;
      this.fail(key, `must be ${range}, got ${value}`);
    }
    return value;
  }

  port(key: string): number | undefined {
    return this.integer(key, 1, 65535);
  }

  stringList(key: string): string[] | undefined {
    const value = this.value(key);
    if (value === undefined) return undefined;
    if (!Array.isArray(value)) return this.fail(key, `expected a list of strings, got ${describeValue(value)}`);
    return value.map((item, i) =>
      typeof item === 'string' ? item : this.failAt(this.itemPath(key, i), `expected a string, got ${describeValue(item)}`),
    );
  }

  /**
   * A duration: a string with a unit ("500ms", "10s", "1.5m", "1h", "1m30s") or a bare number in
   * `bareUnit` (milliseconds per the spec; seconds for the keys fly.toml counts in seconds).
   */
  durationMs(key: string, bareUnit: 'ms' | 's', allowZero = false): number | undefined {
    const value = this.value(key);
    if (value === undefined) return undefined;
    const bare = bareUnit === 'ms' ? 'milliseconds' : 'seconds';
    let ms: number | undefined;
    if (typeof value === 'number') ms = Number.isFinite(value) ? value * (bareUnit === 's' ? 1000 : 1) : undefined;
    else if (typeof value === 'string') ms = parseDuration(value);
    else this.fail(key, `expected a duration such as "10s" or a number of ${bare}, got ${describeValue(value)}`);
    if (ms === undefined) {
      this.fail(key, `invalid duration ${showValue(value)}: use ms, s, m or h ("500ms", "10s", "1.5m") or a number of ${bare}`);
    }
    if (ms < 0 || (ms === 0 && !allowZero)) this.fail(key, allowZero ? 'must not be negative' : 'must be greater than zero');
    if (ms > MAX_DURATION_MS) this.fail(key, `must be at most ${MAX_DURATION_MS}ms (about 24.8 days, the longest a Node timer can wait)`);
    return ms;
  }

  /** A byte count: an integer, or a string with a unit ("16KiB", "1MiB", "64kB"). */
  bytes(key: string, min: number): number | undefined {
    const value = this.value(key);
    if (value === undefined) return undefined;
    let bytes: number | undefined;
    if (typeof value === 'number') bytes = Number.isInteger(value) ? value : undefined;
    else if (typeof value === 'string') bytes = parseSize(value);
    else this.fail(key, `expected a size such as 16384 or "16KiB", got ${describeValue(value)}`);
    if (bytes === undefined) this.fail(key, `invalid size ${showValue(value)}: use whole bytes or B, KiB, MiB, GiB, kB, MB, GB ("16KiB")`);
    if (bytes < min) this.fail(key, `must be at least ${min} bytes, got ${bytes}`);
    return bytes;
  }

  /**
   * A file named by `key`, relative to `dir`, read now so that a wrong path fails check-config
   * and the start rather than the first use, possibly hours later. `marker` must occur in it
   * (what tells a key file from a certificate given by mistake); `what` names the kind of file.
   */
  referencedFile(key: string, dir: string, what: string, marker: string): string | undefined {
    const written = this.matching(key, /\S/, `give the path of ${what}`);
    if (written === undefined) return undefined;
    const file = path.resolve(dir, written);
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
      return this.fail(key, `cannot read ${file} (${code}); it must be ${what}`);
    }
    if (!text.includes(marker)) this.fail(key, `${file} is not ${what} (no "${marker}")`);
    return file;
  }

  /** A sub-table; always returns a Section so that absent tables read as all-defaults. */
  section(key: string): Section {
    const value = this.value(key);
    if (value !== undefined && !isTomlTable(value)) this.fail(key, `expected a table, got ${describeValue(value)}`);
    return new Section(this.file, this.doc, this.at(key), value ?? Object.create(null), value !== undefined, this.line);
  }

  /** An array of tables (`[[key]]` or `key = [{...}]`); empty when absent. */
  sections(key: string): Section[] {
    const value = this.value(key);
    if (value === undefined) return [];
    if (!Array.isArray(value)) return this.fail(key, `expected a list of tables ([[${this.at(key)}]]), got ${describeValue(value)}`);
    return value.map((item, i) => {
      const itemPath = this.itemPath(key, i);
      if (!isTomlTable(item)) this.failAt(itemPath, `expected a table, got ${describeValue(item)}`);
      return new Section(this.file, this.doc, itemPath, item, true, this.line);
    });
  }

  /** All entries of a free-form table (header names, env vars): every key is accepted here. */
  entries(): { key: string; value: TomlValue; path: string }[] {
    return Object.keys(this.table).map((key) => ({ key, value: this.value(key)!, path: this.at(key) }));
  }

  /** Fails on the first (by line) key that no read asked for. */
  finish(): void {
    const unknown = Object.keys(this.table).filter((key) => !this.known.has(key));
    if (unknown.length === 0) return;
    unknown.sort((a, b) => this.lineOf(this.at(a)) - this.lineOf(this.at(b)));
    const key = unknown[0]!;
    const suggestion = closest(key, this.known);
    const hint = suggestion === undefined ? '' : `did you mean "${suggestion}"? `;
    this.fail(key, `unknown key; ${hint}known keys here: ${[...this.known].sort().join(', ')}`);
  }
}

export function describeValue(value: TomlValue): string {
  if (Array.isArray(value)) return 'a list';
  if (isTomlTable(value)) return 'a table';
  if (typeof value === 'number') return Number.isInteger(value) ? `the integer ${value}` : `the number ${value}`;
  if (typeof value === 'boolean') return String(value);
  return `the string ${JSON.stringify(value)}`;
}

/** A scalar as written: strings quoted, numbers as numbers (JSON would print inf and nan as null). */
function showValue(value: string | number): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

export function quoteList(values: readonly string[]): string {
  return values.map((v) => JSON.stringify(v)).join(', ');
}

/** The known key within edit distance 2 of a misspelt one, if any. */
function closest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.min(3, word.length);
  for (const candidate of candidates) {
    const distance = editDistance(word, candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}
