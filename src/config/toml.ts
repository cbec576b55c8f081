// A TOML 1.0 parser of our own. We need two things no small library gives us together: the line of
// every key (config errors must name file, key path and line) and strict redefinition rules. Offset
// and local date-times are rejected: no petrel setting is a date, and refusing them keeps the value
// model to plain JSON-like data.
//
// Tables are null-prototype objects so that keys such as `__proto__` or `toString` are ordinary
// data and never reach Object.prototype.

import { ConfigError } from './types.ts';

export type TomlValue = string | number | boolean | TomlValue[] | TomlTable;
export interface TomlTable {
  [key: string]: TomlValue;
}

export interface TomlDocument {
  readonly value: TomlTable;
  /** Line of every key, table header and array element, keyed by `keyPath`/`indexPath` paths. */
  readonly lines: Map<string, number>;
}

/** Key path used for syntax errors that happen outside any table. */
export const TOP_LEVEL = '(top level)';

export function parseToml(text: string, file: string): TomlDocument {
  return new TomlParser(text, file).parseDocument();
}

export function isTomlTable(value: TomlValue | undefined): value is TomlTable {
  return typeof value === 'object' && !Array.isArray(value);
}

const BARE_KEY = /^[A-Za-z0-9_-]+$/;

/** `parent.key`, quoting keys that are not bare so the path reads back unambiguously. */
export function keyPath(parent: string, key: string): string {
  const part = BARE_KEY.test(key) ? key : JSON.stringify(key);
  return parent === '' ? part : `${parent}.${part}`;
}

export function indexPath(parent: string, index: number): string {
  return `${parent}[${index}]`;
}

/**
 * How a table came to exist decides what may still be added to it (TOML 1.0, "Table"):
 * - implicit: created as a parent by a header like [a.b.c]; may later get its own [a.b] header once.
 * - header:   defined by [a] or [[a]]; never defined again.
 * - dotted:   created by a dotted key (a.b = 1); more dotted keys may extend it, a header may not
 *             define it, but a header may add sub-tables under it.
 * - inline:   { ... } is complete when it closes; nothing may be added to it or below it.
 */
type TableKind = 'implicit' | 'header' | 'dotted' | 'inline';

const DEC_INT = /^[+-]?(?:0|[1-9](?:_?[0-9])*)$/;
const HEX_INT = /^0x[0-9A-Fa-f](?:_?[0-9A-Fa-f])*$/;
const OCT_INT = /^0o[0-7](?:_?[0-7])*$/;
const BIN_INT = /^0b[01](?:_?[01])*$/;
// The exponent's integer may have leading zeros (TOML 1.0, "Float").
const FLOAT = /^[+-]?(?:0|[1-9](?:_?[0-9])*)(?:\.[0-9](?:_?[0-9])*)?(?:[eE][+-]?[0-9](?:_?[0-9])*)?$/;
const SPECIAL_FLOAT = /^[+-]?(?:inf|nan)$/;
const NUMBER_TOKEN = /[0-9A-Za-z_+.-]+/y;
const DATE_START = /\d{4}-\d{2}-\d{2}|\d{2}:\d{2}/y;
const BARE_KEY_CHAR = /[A-Za-z0-9_-]/;

const SIMPLE_ESCAPES: Readonly<Record<string, string>> = {
  b: '\b',
  t: '\t',
  n: '\n',
  f: '\f',
  r: '\r',
  '"': '"',
  '\\': '\\',
};

function newTable(): TomlTable {
  return Object.create(null) as TomlTable;
}

/** Control characters other than tab are not allowed raw in strings or comments. */
function isControl(c: string): boolean {
  const code = c.charCodeAt(0);
  return (code <= 0x1f && code !== 0x09) || code === 0x7f;
}

function describeChar(c: string | undefined): string {
  if (c === undefined) return 'end of file';
  if (c === '\n' || c === '\r') return 'end of line';
  if (isControl(c)) return `control character U+${c.charCodeAt(0).toString(16).padStart(4, '0').toUpperCase()}`;
  return JSON.stringify(c);
}

function describeValue(value: TomlValue): string {
  if (Array.isArray(value)) return 'an array';
  if (isTomlTable(value)) return 'a table';
  return `the value ${JSON.stringify(value)}`;
}

class TomlParser {
  private readonly text: string;
  private readonly file: string;
  private pos = 0;
  private line = 1;
  private readonly root: TomlTable = newTable();
  private readonly lines = new Map<string, number>();
  private readonly kinds = new WeakMap<TomlTable, TableKind>();
  /** Arrays created by [[header]]; only these may be appended to by a later [[header]]. */
  private readonly tableArrays = new WeakSet<TomlValue[]>();
  /** The table that `key = value` lines currently go to, set by the last header. */
  private current: TomlTable;
  private currentPath = '';

  constructor(text: string, file: string) {
    // A byte order mark is not part of the document.
    this.text = text.startsWith('\uFEFF') ? text.slice(1) : text;
    this.file = file;
    this.current = this.root;
    this.kinds.set(this.root, 'header');
  }

  parseDocument(): TomlDocument {
    for (;;) {
      this.skipBlankLinesAndComments();
      if (this.pos >= this.text.length) break;
      if (this.peek() === '[') this.parseHeader();
      else this.parseKeyValue(this.current, this.currentPath);
      this.expectEndOfLine();
    }
    return { value: this.root, lines: this.lines };
  }

  // ---- errors -------------------------------------------------------------------------------

  private fail(path: string, reason: string, line: number = this.line): never {
    throw new ConfigError(this.file, path === '' ? TOP_LEVEL : path, line, reason);
  }

  private lineOf(path: string): string {
    const line = this.lines.get(path);
    return line === undefined ? '' : ` on line ${line}`;
  }

  // ---- characters, whitespace, comments, line ends ------------------------------------------

  private peek(offset = 0): string | undefined {
    return this.text[this.pos + offset];
  }

  private skipWhitespace(): void {
    for (let c = this.peek(); c === ' ' || c === '\t'; c = this.peek()) this.pos++;
  }

  private skipComment(): void {
    if (this.peek() !== '#') return;
    this.pos++;
    for (let c = this.peek(); c !== undefined && c !== '\n'; c = this.peek()) {
      if (c === '\r' && this.peek(1) === '\n') break;
      if (isControl(c)) this.fail(this.currentPath, `${describeChar(c)} is not allowed in a comment`);
      this.pos++;
    }
  }

  /** Consumes one line end (LF or CRLF) if there is one; a lone CR is an error. */
  private consumeNewline(path: string): boolean {
    const c = this.peek();
    if (c === '\n') {
      this.pos++;
      this.line++;
      return true;
    }
    if (c === '\r') {
      if (this.peek(1) !== '\n') this.fail(path, 'a carriage return must be followed by a line feed');
      this.pos += 2;
      this.line++;
      return true;
    }
    return false;
  }

  private skipBlankLinesAndComments(): void {
    do {
      this.skipWhitespace();
      this.skipComment();
    } while (this.consumeNewline(this.currentPath));
  }

  private expectEndOfLine(): void {
    this.skipWhitespace();
    this.skipComment();
    if (this.pos >= this.text.length) return;
    if (!this.consumeNewline(this.currentPath)) {
      this.fail(this.currentPath, `expected the end of the line, found ${describeChar(this.peek())}`);
    }
  }

  /** Inside arrays, newlines and comments may appear between elements. */
  private skipWhitespaceNewlinesAndComments(path: string): void {
    do {
      this.skipWhitespace();
      this.skipComment();
    } while (this.consumeNewline(path));
  }

  // ---- keys ---------------------------------------------------------------------------------

  private parseKey(path: string): string[] {
    const parts = [this.parseSimpleKey(path)];
    for (;;) {
      this.skipWhitespace();
      if (this.peek() !== '.') return parts;
      this.pos++;
      this.skipWhitespace();
      parts.push(this.parseSimpleKey(path));
    }
  }

  private parseSimpleKey(path: string): string {
    const c = this.peek();
    if (this.text.startsWith('"""', this.pos) || this.text.startsWith("'''", this.pos)) {
      this.fail(path, 'a multi-line string cannot be a key');
    }
    if (c === '"') return this.parseBasicString(path);
    if (c === "'") return this.parseLiteralString(path);
    const start = this.pos;
    while (this.pos < this.text.length && BARE_KEY_CHAR.test(this.text[this.pos]!)) this.pos++;
    if (this.pos === start) this.fail(path, `expected a key, found ${describeChar(c)}`);
    return this.text.slice(start, this.pos);
  }

  // ---- statements: key/value pairs and headers ----------------------------------------------

  /** `a.b.c = value` into `table` (whose path is `tablePath`). */
  private parseKeyValue(table: TomlTable, tablePath: string): void {
    const line = this.line;
    const parts = this.parseKey(tablePath);
    this.skipWhitespace();
    if (this.peek() !== '=') {
      this.fail(parts.reduce(keyPath, tablePath), `expected "=" after the key, found ${describeChar(this.peek())}`);
    }
    this.pos++;
    this.skipWhitespace();

    let target = table;
    let path = tablePath;
    for (const part of parts.slice(0, -1)) {
      path = keyPath(path, part);
      target = this.enterDottedTable(target, part, path, line);
    }
    const last = parts[parts.length - 1]!;
    const fullPath = keyPath(path, last);
    if (Object.hasOwn(target, last)) {
      this.fail(fullPath, `key defined twice (first${this.lineOf(fullPath)})`, line);
    }
    this.lines.set(fullPath, line);
    target[last] = this.parseValue(fullPath);
  }

  /** One part of a dotted key: creates the table, or extends one earlier dotted keys created. */
  private enterDottedTable(parent: TomlTable, key: string, path: string, line: number): TomlTable {
    if (!Object.hasOwn(parent, key)) {
      const table = newTable();
      this.kinds.set(table, 'dotted');
      parent[key] = table;
      this.lines.set(path, line);
      return table;
    }
    const existing = parent[key]!;
    if (!isTomlTable(existing)) {
      this.fail(path, `cannot add keys: already ${describeValue(existing)}${this.lineOf(path)}`, line);
    }
    const kind = this.kinds.get(existing);
    if (kind === 'inline') this.fail(path, `cannot add keys to an inline table (defined${this.lineOf(path)})`, line);
    if (kind !== 'dotted') {
      this.fail(path, `cannot add keys with a dotted key to a table defined by a header${this.lineOf(path)}`, line);
    }
    return existing;
  }

  /** `[a.b]` or `[[a.b]]`. */
  private parseHeader(): void {
    const line = this.line;
    this.pos++;
    const isArray = this.peek() === '[';
    if (isArray) this.pos++;
    this.skipWhitespace();
    const parts = this.parseKey(this.currentPath);
    this.skipWhitespace();
    const close = isArray ? ']]' : ']';
    if (!this.text.startsWith(close, this.pos)) {
      this.fail(parts.reduce(keyPath, ''), `expected "${close}" to close the table header, found ${describeChar(this.peek())}`);
    }
    this.pos += close.length;

    let table = this.root;
    let path = '';
    for (const part of parts.slice(0, -1)) {
      path = keyPath(path, part);
      ({ table, path } = this.enterHeaderParent(table, part, path, line));
    }
    const last = parts[parts.length - 1]!;
    path = keyPath(path, last);
    if (isArray) this.openArrayTable(table, last, path, line);
    else this.openTable(table, last, path, line);
  }

  /** A parent in a header path: any table but an inline one, or the last table of a [[array]]. */
  private enterHeaderParent(
    parent: TomlTable,
    key: string,
    path: string,
    line: number,
  ): { table: TomlTable; path: string } {
    if (!Object.hasOwn(parent, key)) {
      const table = newTable();
      this.kinds.set(table, 'implicit');
      parent[key] = table;
      this.lines.set(path, line);
      return { table, path };
    }
    const existing = parent[key]!;
    if (Array.isArray(existing)) {
      if (!this.tableArrays.has(existing)) {
        this.fail(path, `cannot add a table to a static array (defined${this.lineOf(path)})`, line);
      }
      return { table: existing[existing.length - 1] as TomlTable, path: indexPath(path, existing.length - 1) };
    }
    if (!isTomlTable(existing)) {
      this.fail(path, `cannot add a table: already ${describeValue(existing)}${this.lineOf(path)}`, line);
    }
    if (this.kinds.get(existing) === 'inline') {
      this.fail(path, `cannot add a table to an inline table (defined${this.lineOf(path)})`, line);
    }
    return { table: existing, path };
  }

  private openTable(parent: TomlTable, key: string, path: string, line: number): void {
    let table: TomlTable;
    if (!Object.hasOwn(parent, key)) {
      table = newTable();
      parent[key] = table;
    } else {
      const existing = parent[key]!;
      if (Array.isArray(existing)) {
        const what = this.tableArrays.has(existing) ? 'an array of tables' : 'an array';
        this.fail(path, `table defined twice: already ${what}${this.lineOf(path)}`, line);
      }
      if (!isTomlTable(existing)) {
        this.fail(path, `table defined twice: already ${describeValue(existing)}${this.lineOf(path)}`, line);
      }
      if (this.kinds.get(existing) !== 'implicit') {
        this.fail(path, `table defined twice (first${this.lineOf(path)})`, line);
      }
      table = existing;
    }
    this.kinds.set(table, 'header');
    // The explicit header is the line a reader looks for, even if a sub-table came first.
    this.lines.set(path, line);
    this.current = table;
    this.currentPath = path;
  }

  private openArrayTable(parent: TomlTable, key: string, path: string, line: number): void {
    let array: TomlValue[];
    if (!Object.hasOwn(parent, key)) {
      array = [];
      this.tableArrays.add(array);
      parent[key] = array;
      this.lines.set(path, line);
    } else {
      const existing = parent[key]!;
      if (!Array.isArray(existing) || !this.tableArrays.has(existing)) {
        const what = Array.isArray(existing) ? 'a static array' : describeValue(existing);
        this.fail(path, `cannot append to ${what} (defined${this.lineOf(path)})`, line);
      }
      array = existing;
    }
    const table = newTable();
    this.kinds.set(table, 'header');
    array.push(table);
    const elementPath = indexPath(path, array.length - 1);
    this.lines.set(elementPath, line);
    this.current = table;
    this.currentPath = elementPath;
  }

  // ---- values -------------------------------------------------------------------------------

  private parseValue(path: string): TomlValue {
    const c = this.peek();
    if (c === '"') {
      return this.text.startsWith('"""', this.pos) ? this.parseMultiLineBasicString(path) : this.parseBasicString(path);
    }
    if (c === "'") {
      return this.text.startsWith("'''", this.pos)
        ? this.parseMultiLineLiteralString(path)
        : this.parseLiteralString(path);
    }
    if (c === '[') return this.parseArray(path);
    if (c === '{') return this.parseInlineTable(path);
    if (this.text.startsWith('true', this.pos) && !this.isBareKeyCharAt(this.pos + 4)) {
      this.pos += 4;
      return true;
    }
    if (this.text.startsWith('false', this.pos) && !this.isBareKeyCharAt(this.pos + 5)) {
      this.pos += 5;
      return false;
    }
    return this.parseNumber(path);
  }

  private isBareKeyCharAt(index: number): boolean {
    const c = this.text[index];
    return c !== undefined && BARE_KEY_CHAR.test(c);
  }

  private parseNumber(path: string): number {
    DATE_START.lastIndex = this.pos;
    if (DATE_START.test(this.text)) {
      this.fail(path, 'dates and times are not supported; write them as a string');
    }
    NUMBER_TOKEN.lastIndex = this.pos;
    const token = NUMBER_TOKEN.exec(this.text)?.[0];
    if (token === undefined) this.fail(path, `expected a value, found ${describeChar(this.peek())}`);
    this.pos += token.length;

    const digits = token.replaceAll('_', '');
    if (DEC_INT.test(token) || HEX_INT.test(token) || OCT_INT.test(token) || BIN_INT.test(token)) {
      const value = Number(digits);
      // TOML integers are 64-bit; JS numbers hold integers exactly only up to 2^53 - 1.
      if (!Number.isSafeInteger(value)) this.fail(path, `integer ${token} is too large (limit ±${Number.MAX_SAFE_INTEGER})`);
      return value === 0 ? 0 : value; // no -0 for integers
    }
    if (FLOAT.test(token)) return Number(digits);
    if (SPECIAL_FLOAT.test(token)) {
      if (token.endsWith('nan')) return Number.NaN;
      return token.startsWith('-') ? -Infinity : Infinity;
    }
    if (/^[+-]?0[0-9]/.test(token)) this.fail(path, `invalid number ${JSON.stringify(token)}: leading zeros are not allowed`);
    if (/^[A-Za-z]/.test(token)) {
      this.fail(path, `invalid value ${JSON.stringify(token)} (strings must be quoted)`);
    }
    this.fail(path, `invalid number ${JSON.stringify(token)}`);
  }

  private parseArray(path: string): TomlValue[] {
    const startLine = this.line;
    this.pos++;
    const array: TomlValue[] = [];
    for (;;) {
      this.skipWhitespaceNewlinesAndComments(path);
      if (this.peek() === ']') break;
      if (this.peek() === undefined) this.fail(path, `unterminated array (opened on line ${startLine})`);
      const elementPath = indexPath(path, array.length);
      this.lines.set(elementPath, this.line);
      array.push(this.parseValue(elementPath));
      this.skipWhitespaceNewlinesAndComments(path);
      const c = this.peek();
      if (c === ',') {
        this.pos++;
        continue;
      }
      if (c === ']') break;
      if (c === undefined) this.fail(path, `unterminated array (opened on line ${startLine})`);
      this.fail(path, `expected "," or "]" in the array, found ${describeChar(c)}`);
    }
    this.pos++;
    return array;
  }

  private parseInlineTable(path: string): TomlTable {
    this.pos++;
    const table = newTable();
    // Dotted keys inside the braces may extend each other until the table closes.
    this.kinds.set(table, 'dotted');
    this.skipWhitespace();
    if (this.peek() === '}') {
      this.pos++;
      this.seal(table);
      return table;
    }
    for (;;) {
      this.skipWhitespace();
      const c = this.peek();
      if (c === '\n' || c === '\r' || c === undefined) {
        this.fail(path, 'an inline table must be on one line (TOML 1.0); use a [table] instead');
      }
      if (c === '}') this.fail(path, 'trailing comma not allowed in an inline table');
      this.parseKeyValue(table, path);
      this.skipWhitespace();
      const next = this.peek();
      if (next === ',') {
        this.pos++;
        continue;
      }
      if (next === '}') break;
      if (next === '\n' || next === '\r' || next === undefined) {
        this.fail(path, 'an inline table must be on one line (TOML 1.0); use a [table] instead');
      }
      this.fail(path, `expected "," or "}" in the inline table, found ${describeChar(next)}`);
    }
    this.pos++;
    this.seal(table);
    return table;
  }

  /** Marks an inline table and every table inside it as complete. */
  private seal(value: TomlValue): void {
    if (Array.isArray(value)) {
      for (const element of value) this.seal(element);
    } else if (isTomlTable(value)) {
      this.kinds.set(value, 'inline');
      for (const child of Object.values(value)) this.seal(child);
    }
  }

  // ---- strings ------------------------------------------------------------------------------

  private parseBasicString(path: string): string {
    const startLine = this.line;
    this.pos++;
    let out = '';
    for (;;) {
      const c = this.peek();
      if (c === '"') break;
      if (c === undefined || c === '\n' || c === '\r') {
        this.fail(path, `unterminated string (opened on line ${startLine}; use """ for multi-line strings)`);
      }
      if (c === '\\') {
        out += this.parseEscape(path);
        continue;
      }
      if (isControl(c)) this.fail(path, `${describeChar(c)} must be escaped in a string`);
      out += c;
      this.pos++;
    }
    this.pos++;
    return out;
  }

  private parseEscape(path: string): string {
    const e = this.peek(1);
    if (e !== undefined && Object.hasOwn(SIMPLE_ESCAPES, e)) {
      this.pos += 2;
      return SIMPLE_ESCAPES[e]!;
    }
    if (e === 'u' || e === 'U') {
      const length = e === 'u' ? 4 : 8;
      const hex = this.text.slice(this.pos + 2, this.pos + 2 + length);
      if (!new RegExp(`^[0-9A-Fa-f]{${length}}$`).test(hex)) {
        this.fail(path, `invalid escape \\${e}${hex}: expected ${length} hex digits`);
      }
      const code = Number.parseInt(hex, 16);
      if (code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
        this.fail(path, `invalid escape \\${e}${hex}: not a Unicode scalar value`);
      }
      this.pos += 2 + length;
      return String.fromCodePoint(code);
    }
    const shown = e === undefined || isControl(e) ? ` followed by ${describeChar(e)}` : e;
    this.fail(path, `invalid escape sequence \\${shown}`);
  }

  private parseMultiLineBasicString(path: string): string {
    const startLine = this.line;
    this.pos += 3;
    this.consumeNewline(path); // a newline right after the opening quotes is not content
    let out = '';
    for (;;) {
      const c = this.peek();
      if (c === undefined) this.fail(path, `unterminated multi-line string (opened on line ${startLine})`);
      if (this.text.startsWith('"""', this.pos)) {
        // Up to two quotes right before the closing delimiter are content: """a""""" is 'a""'.
        let quotes = 3;
        while (this.peek(quotes) === '"' && quotes < 5) quotes++;
        if (this.peek(quotes) === '"') this.fail(path, 'too many quotes at the end of a multi-line string');
        out += '"'.repeat(quotes - 3);
        this.pos += quotes;
        return out;
      }
      if (c === '\\') {
        if (this.skipLineEndingBackslash(path)) continue;
        out += this.parseEscape(path);
        continue;
      }
      if (this.consumeNewline(path)) {
        out += '\n'; // CRLF is normalised to LF
        continue;
      }
      if (isControl(c)) this.fail(path, `${describeChar(c)} must be escaped in a string`);
      out += c;
      this.pos++;
    }
  }

  /**
   * A backslash that is the last non-blank character of a line removes itself and all whitespace
   * and newlines up to the next visible character (TOML 1.0, "String").
   */
  private skipLineEndingBackslash(path: string): boolean {
    let i = this.pos + 1;
    while (this.text[i] === ' ' || this.text[i] === '\t') i++;
    if (this.text[i] !== '\n' && !(this.text[i] === '\r' && this.text[i + 1] === '\n')) return false;
    this.pos = i;
    do this.skipWhitespace();
    while (this.consumeNewline(path));
    return true;
  }

  private parseLiteralString(path: string): string {
    const startLine = this.line;
    const start = ++this.pos;
    for (;;) {
      const c = this.peek();
      if (c === "'") break;
      if (c === undefined || c === '\n' || c === '\r') {
        this.fail(path, `unterminated string (opened on line ${startLine}; use ''' for multi-line strings)`);
      }
      if (isControl(c)) this.fail(path, `${describeChar(c)} is not allowed in a literal string`);
      this.pos++;
    }
    const value = this.text.slice(start, this.pos);
    this.pos++;
    return value;
  }

  private parseMultiLineLiteralString(path: string): string {
    const startLine = this.line;
    this.pos += 3;
    this.consumeNewline(path);
    let out = '';
    for (;;) {
      const c = this.peek();
      if (c === undefined) this.fail(path, `unterminated multi-line string (opened on line ${startLine})`);
      if (this.text.startsWith("'''", this.pos)) {
        let quotes = 3;
        while (this.peek(quotes) === "'" && quotes < 5) quotes++;
        if (this.peek(quotes) === "'") this.fail(path, 'too many quotes at the end of a multi-line string');
        out += "'".repeat(quotes - 3);
        this.pos += quotes;
        return out;
      }
      if (this.consumeNewline(path)) {
        out += '\n';
        continue;
      }
      if (isControl(c)) this.fail(path, `${describeChar(c)} is not allowed in a literal string`);
      out += c;
      this.pos++;
    }
  }
}
