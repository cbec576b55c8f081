import t from 'tap';
import type { Test } from 'tap';
import { indexPath, keyPath, parseToml, TOP_LEVEL } from '../src/config/toml.ts';
import type { TomlTable } from '../src/config/toml.ts';
import { ConfigError } from '../src/config/types.ts';

const FILE = '/etc/petrel/test.toml';

/** Parsed value as ordinary JSON data (tables are null-prototype objects). */
function parse(text: string): unknown {
  return JSON.parse(JSON.stringify(parseToml(text, FILE).value));
}

function lines(text: string): Record<string, number> {
  return Object.fromEntries(parseToml(text, FILE).lines);
}

/** Asserts a ConfigError with file, key path, line and a reason matching `reason`. */
function fails(t: Test, text: string, key: string, line: number, reason: RegExp): void {
  try {
    parseToml(text, FILE);
    t.fail(`expected an error for ${JSON.stringify(text)}`);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    t.equal(error.file, FILE, 'file');
    t.equal(error.key, key, `key for ${JSON.stringify(text)}`);
    t.equal(error.line, line, `line for ${JSON.stringify(text)}`);
    t.match(error.message, reason, `reason for ${JSON.stringify(text)}`);
    t.ok(error.message.startsWith(`${FILE}:${line}: ${key}: `), 'message names file:line: key');
  }
}

t.test('comments, blank lines, BOM and CRLF', async (t) => {
  t.same(parse('\uFEFF# header\r\n\r\na = 1 # trailing\r\n  # indented\r\nb = 2\r\n'), { a: 1, b: 2 });
  t.same(parse(''), {});
  t.same(parse('# only a comment'), {});
  t.same(parse('a = 1'), { a: 1 }, 'no newline at end of file');
});

t.test('keys: bare, quoted, dotted', async (t) => {
  t.same(parse('bare_key-1 = 1\n"quoted key" = 2\n\'literal.key\' = 3\n1234 = 4\n"" = 5'), {
    'bare_key-1': 1,
    'quoted key': 2,
    'literal.key': 3,
    '1234': 4,
    '': 5,
  });
  t.same(parse('a.b.c = 1\na . b . d = 2\na."e.f" = 3'), { a: { b: { c: 1, d: 2 }, 'e.f': 3 } });
  t.same(parse('"\\u0041" = 1'), { A: 1 }, 'escapes in quoted keys');
});

t.test('keys that shadow Object.prototype are plain data', async (t) => {
  const doc = parseToml('__proto__ = 1\ntoString = "x"\n[constructor]\na = 1', FILE);
  t.equal(Object.getPrototypeOf(doc.value), null);
  t.equal(doc.value['__proto__'], 1);
  t.equal(doc.value['toString'], 'x');
  t.same(JSON.parse(JSON.stringify(doc.value['constructor'])), { a: 1 });
  t.equal(({} as Record<string, unknown>)['a'], undefined, 'Object.prototype untouched');
});

t.test('basic strings and escapes', async (t) => {
  t.same(parse('s = "tab\\there \\"q\\" back\\\\slash \\b\\f\\n\\r"'), { s: 'tab\there "q" back\\slash \b\f\n\r' });
  t.same(parse('s = "\\u00e9\\U0001F600"'), { s: 'é😀' });
  t.same(parse('s = "tab\tinside"'), { s: 'tab\tinside' }, 'a raw tab is allowed');
  t.same(parse('s = ""'), { s: '' });
});

t.test('literal strings', async (t) => {
  t.same(parse("s = 'C:\\Users\\nodejs'"), { s: 'C:\\Users\\nodejs' });
  t.same(parse("s = '<\\i\\c*\\s*>'"), { s: '<\\i\\c*\\s*>' });
});

t.test('multi-line basic strings', async (t) => {
  t.same(parse('s = """\nRoses are red\nViolets are blue"""'), { s: 'Roses are red\nViolets are blue' }, 'first newline trimmed');
  t.same(parse('s = """\\\n  The quick \\\n\n  brown fox.\\\n  """'), { s: 'The quick brown fox.' }, 'line-ending backslash');
  t.same(parse('s = """a \\   \n  b"""'), { s: 'a b' }, 'whitespace after a line-ending backslash');
  t.same(parse('s = """Here are two quotation marks: "". Simple."""'), { s: 'Here are two quotation marks: "". Simple.' });
  t.same(parse('s = """"one quote""""'), { s: '"one quote"' });
  t.same(parse('s = """two quotes"""""'), { s: 'two quotes""' });
  t.same(parse('s = """a\r\nb"""'), { s: 'a\nb' }, 'CRLF normalised');
  t.same(parse('s = """\\ttab \\u0041"""'), { s: '\ttab A' });
  t.same(lines('s = """\n1\n2\n"""\nt = 1'), { s: 1, t: 5 }, 'lines keep counting inside the string');
});

t.test('multi-line literal strings', async (t) => {
  t.same(parse("s = '''\nThe first newline is\ntrimmed in raw strings.\n   \\n stays'''"), {
    s: 'The first newline is\ntrimmed in raw strings.\n   \\n stays',
  });
  t.same(parse("s = ''''That,' she said, 'is pointless.''''"), { s: "'That,' she said, 'is pointless.'" });
  t.same(parse("s = '''two'''''"), { s: "two''" });
});

t.test('integers', async (t) => {
  t.same(parse('a = 99\nb = +42\nc = 0\nd = -17\ne = 1_000\nf = 5_349_221\ng = -0\nh = +0'), {
    a: 99,
    b: 42,
    c: 0,
    d: -17,
    e: 1000,
    f: 5349221,
    g: 0,
    h: 0,
  });
  t.ok(Object.is(parseToml('g = -0', FILE).value['g'], 0), 'integer -0 is 0');
  t.same(parse('a = 0xDEADBEEF\nb = 0xdead_beef\nc = 0o755\nd = 0b1101_0110\ne = 0x0'), {
    a: 0xdeadbeef,
    b: 0xdeadbeef,
    c: 0o755,
    d: 0b11010110,
    e: 0,
  });
  t.equal(parseToml('a = 9007199254740991', FILE).value['a'], Number.MAX_SAFE_INTEGER);
});

t.test('floats', async (t) => {
  const v = parseToml(
    'a = +1.0\nb = 3.1415\nc = -0.01\nd = 5e+22\ne = 1e06\nf = -2E-2\ng = 6.626e-34\nh = 224_617.445_991\ni = inf\nj = +inf\nk = -inf\nl = nan\nm = -nan',
    FILE,
  ).value;
  t.same([v['a'], v['b'], v['c'], v['d'], v['e'], v['f'], v['g'], v['h']], [1, 3.1415, -0.01, 5e22, 1e6, -0.02, 6.626e-34, 224617.445991]);
  t.equal(v['i'], Infinity);
  t.equal(v['j'], Infinity);
  t.equal(v['k'], -Infinity);
  t.ok(Number.isNaN(v['l']));
  t.ok(Number.isNaN(v['m']));
});

t.test('booleans', async (t) => {
  t.same(parse('a = true\nb = false'), { a: true, b: false });
});

t.test('arrays', async (t) => {
  t.same(parse('a = [1, 2, 3]\nb = []\nc = [ "x", \'y\' ]\nd = [[1, 2], ["a"]]\ne = [1, "mixed", 2.5, true, {x = 1}]'), {
    a: [1, 2, 3],
    b: [],
    c: ['x', 'y'],
    d: [[1, 2], ['a']],
    e: [1, 'mixed', 2.5, true, { x: 1 }],
  });
  const text = 'handlers = [\n  "tls", # comment\n\n  "http",\n  # another\n]\nnext = 1';
  t.same(parse(text), { handlers: ['tls', 'http'], next: 1 }, 'multi-line with comments and a trailing comma');
  t.same(lines(text), { handlers: 1, 'handlers[0]': 2, 'handlers[1]': 4, next: 7 });
});

t.test('inline tables', async (t) => {
  t.same(parse('name = { first = "Tom", last = "Preston-Werner" }\npoint = {x=1,y=2}\nempty = {}\nnested = { a = { b = 1 }, c.d = 2, c.e = 3 }'), {
    name: { first: 'Tom', last: 'Preston-Werner' },
    point: { x: 1, y: 2 },
    empty: {},
    nested: { a: { b: 1 }, c: { d: 2, e: 3 } },
  });
  t.same(lines('x = { a = 1, b.c = [ 2 ] }'), { x: 1, 'x.a': 1, 'x.b': 1, 'x.b.c': 1, 'x.b.c[0]': 1 });
});

t.test('tables and dotted headers', async (t) => {
  const text = [
    'top = 1', // 1
    '[a]', // 2
    'x = 1', // 3
    '[ a . "b c" ]', // 4
    'y = 2', // 5
    '[d.e.f]', // 6
    '[d]', // 7: an implicitly created table may be defined once
    'z = 3', // 8
    '[g]', // 9
    'h.i = 1', // 10
    '[g.h.j]', // 11: a header may add a sub-table under a dotted-key table
    'k = 2', // 12
  ].join('\n');
  t.same(parse(text), { top: 1, a: { x: 1, 'b c': { y: 2 } }, d: { e: { f: {} }, z: 3 }, g: { h: { i: 1, j: { k: 2 } } } });
  const l = lines(text);
  t.equal(l['a'], 2);
  t.equal(l['a."b c"'], 4);
  t.equal(l['a."b c".y'], 5);
  t.equal(l['d'], 7, 'the explicit header wins over the implicit creation');
  t.equal(l['d.e'], 6);
  t.equal(l['g.h.j.k'], 12);
});

t.test('arrays of tables', async (t) => {
  const text = [
    '[[services]]', // 1
    'internal_port = 8080', // 2
    '[[services.ports]]', // 3
    'port = 80', // 4
    '[[services.ports]]', // 5
    'port = 443', // 6
    '[services.ports.tls_options]', // 7
    'alpn = ["h2"]', // 8
    '[services.concurrency]', // 9
    'soft_limit = 5', // 10
    '[[services]]', // 11
    'internal_port = 9000', // 12
    'ports = [ { port = 5432 } ]', // 13
  ].join('\n');
  t.same(parse(text), {
    services: [
      { internal_port: 8080, ports: [{ port: 80 }, { port: 443, tls_options: { alpn: ['h2'] } }], concurrency: { soft_limit: 5 } },
      { internal_port: 9000, ports: [{ port: 5432 }] },
    ],
  });
  t.same(lines(text), {
    services: 1,
    'services[0]': 1,
    'services[0].internal_port': 2,
    'services[0].ports': 3,
    'services[0].ports[0]': 3,
    'services[0].ports[0].port': 4,
    'services[0].ports[1]': 5,
    'services[0].ports[1].port': 6,
    'services[0].ports[1].tls_options': 7,
    'services[0].ports[1].tls_options.alpn': 8,
    'services[0].ports[1].tls_options.alpn[0]': 8,
    'services[0].concurrency': 9,
    'services[0].concurrency.soft_limit': 10,
    'services[1]': 11,
    'services[1].internal_port': 12,
    'services[1].ports': 13,
    'services[1].ports[0]': 13,
    'services[1].ports[0].port': 13,
  });
});

t.test('key paths quote keys that are not bare', async (t) => {
  t.equal(keyPath('', 'a'), 'a');
  t.equal(keyPath('a', 'b-c_1'), 'a.b-c_1');
  t.equal(keyPath('headers', 'X Y'), 'headers."X Y"');
  t.equal(keyPath('a', 'b.c'), 'a."b.c"');
  t.equal(indexPath('services', 2), 'services[2]');
  t.same(Object.keys(Object.fromEntries(parseToml('h = { "a b" = 1 }', FILE).lines)), ['h', 'h."a b"']);
});

t.test('the parsed value is a plain data tree', async (t) => {
  const value: TomlTable = parseToml('[a]\nb = [1, {c = 2}]', FILE).value;
  t.same(JSON.parse(JSON.stringify(value)), { a: { b: [1, { c: 2 }] } });
});

t.test('redefinition errors', async (t) => {
  fails(t, 'a = 1\nb = 2\na = 3', 'a', 3, /key defined twice \(first on line 1\)/);
  fails(t, '[t]\nx = 1\n[u]\n[t]', 't', 4, /table defined twice \(first on line 1\)/);
  fails(t, '[t.u]\n[t]\n[t]', 't', 3, /table defined twice/);
  fails(t, '[t]\nx.y = 1\n[t.x]', 't.x', 3, /table defined twice/);
  fails(t, 'a.b = 1\n[a]', 'a', 2, /table defined twice/);
  fails(t, '[[t]]\n[t]', 't', 2, /already an array of tables/);
  fails(t, '[t]\n[[t]]', 't', 2, /cannot append to a table/);
  fails(t, 't = [1]\n[[t]]', 't', 2, /cannot append to a static array/);
  fails(t, 't = []\n[t.x]', 't', 2, /static array/);
  fails(t, 'a = 1\n[a]', 'a', 2, /already the value 1/);
  fails(t, 'a = 1\n[a.b]', 'a', 2, /cannot add a table: already the value 1/);
  fails(t, 'a = 1\na.b = 2', 'a', 2, /cannot add keys: already the value 1/);
  fails(t, '[a.b.c]\nz = 9\n[a]\nb.c.t = 9', 'a.b', 4, /dotted key to a table defined by a header/);
  fails(t, '[a]\nx = 1\n[b]\n[a.x]', 'a.x', 4, /already the value 1/);
  fails(t, 'i = { a = 1 }\ni.b = 2', 'i', 2, /cannot add keys to an inline table \(defined on line 1\)/);
  fails(t, 'i = { a = 1 }\n[i.b]', 'i', 2, /cannot add a table to an inline table/);
  fails(t, 'i = { a = { b = 1 }, a.c = 2 }', 'i.a', 1, /inline table/);
  fails(t, 'i = { a = 1, a = 2 }', 'i.a', 1, /key defined twice/);
  fails(t, '[[s]]\nx = 1\nx = 2', 's[0].x', 3, /key defined twice/);
});

t.test('syntax errors name the key and line', async (t) => {
  fails(t, '\n\na 1', 'a', 3, /expected "=" after the key, found "1"/);
  fails(t, 'a =', 'a', 1, /expected a value, found end of file/);
  fails(t, 'a = \nb = 1', 'a', 1, /expected a value, found end of line/);
  fails(t, 'a = 1 b = 2', TOP_LEVEL, 1, /expected the end of the line, found "b"/);
  fails(t, '[t]\nx = "a" "b"', 't', 2, /expected the end of the line/);
  fails(t, '= 1', TOP_LEVEL, 1, /expected a key, found "="/);
  fails(t, 'a.= 1', TOP_LEVEL, 1, /expected a key/);
  fails(t, '"""k""" = 1', TOP_LEVEL, 1, /multi-line string cannot be a key/);
  fails(t, '[t\nx = 1', 't', 1, /expected "\]" to close the table header, found end of line/);
  fails(t, '[[t]\n', 't', 1, /expected "\]\]"/);
  fails(t, '[]', TOP_LEVEL, 1, /expected a key, found "\]"/);
  fails(t, '[ [t]]', TOP_LEVEL, 1, /expected a key, found "\["/);
  fails(t, 'a = 1\rb = 2', TOP_LEVEL, 1, /carriage return must be followed by a line feed/);
  fails(t, '# bad \u0001 comment', TOP_LEVEL, 1, /control character U\+0001 is not allowed in a comment/);
  fails(t, 'a = yes', 'a', 1, /invalid value "yes" \(strings must be quoted\)/);
  fails(t, 'a = trueish', 'a', 1, /invalid value "trueish"/);
});

t.test('string errors', async (t) => {
  fails(t, 'a = "open', 'a', 1, /unterminated string \(opened on line 1/);
  fails(t, 'a = "line\nbreak"', 'a', 1, /unterminated string/);
  fails(t, 'a = \'open', 'a', 1, /unterminated string/);
  fails(t, 'a = "\\q"', 'a', 1, /invalid escape sequence \\q/);
  fails(t, 'a = "\\e"', 'a', 1, /invalid escape sequence \\e/);
  fails(t, 'a = "\\u12"', 'a', 1, /expected 4 hex digits/);
  fails(t, 'a = "\\uD800"', 'a', 1, /not a Unicode scalar value/);
  fails(t, 'a = "\\U00110000"', 'a', 1, /not a Unicode scalar value/);
  fails(t, 'a = "bell\u0007"', 'a', 1, /control character U\+0007 must be escaped/);
  fails(t, "a = 'del\u007f'", 'a', 1, /control character U\+007F is not allowed in a literal string/);
  fails(t, 'x = 1\na = """\nnever closed\n', 'a', 4, /unterminated multi-line string \(opened on line 2\)/);
  fails(t, "a = '''\nnever closed", 'a', 2, /unterminated multi-line string/);
  fails(t, 'a = """x""""""', 'a', 1, /too many quotes/);
  fails(t, 'a = """\\ x"""', 'a', 1, /invalid escape sequence/);
});

t.test('number errors', async (t) => {
  fails(t, 'a = 01', 'a', 1, /leading zeros are not allowed/);
  fails(t, 'a = 1__0', 'a', 1, /invalid number "1__0"/);
  fails(t, 'a = 10_', 'a', 1, /invalid number/);
  fails(t, 'a = _1', 'a', 1, /invalid number "_1"/);
  fails(t, 'a = 1.', 'a', 1, /invalid number "1\."/);
  fails(t, 'a = .5', 'a', 1, /invalid number/);
  fails(t, 'a = 1.2.3', 'a', 1, /invalid number/);
  fails(t, 'a = +0x10', 'a', 1, /invalid number/);
  fails(t, 'a = 0xG', 'a', 1, /invalid number/);
  fails(t, 'a = 1e', 'a', 1, /invalid number/);
  fails(t, 'a = 9007199254740992', 'a', 1, /too large/);
  fails(t, 'a = infinity', 'a', 1, /invalid value/);
});

t.test('dates and times are rejected clearly', async (t) => {
  fails(t, 'a = 1979-05-27T07:32:00Z', 'a', 1, /dates and times are not supported; write them as a string/);
  fails(t, 'a = 1979-05-27', 'a', 1, /dates and times are not supported/);
  fails(t, '\na = 07:32:00', 'a', 2, /dates and times are not supported/);
  fails(t, 'a = [1979-05-27]', 'a[0]', 1, /dates and times are not supported/);
});

t.test('array and inline table errors', async (t) => {
  fails(t, 'a = [1 2]', 'a', 1, /expected "," or "\]" in the array, found "2"/);
  fails(t, 'a = [1,\n2,\n', 'a', 3, /unterminated array \(opened on line 1\)/);
  fails(t, 'a = [,]', 'a[0]', 1, /expected a value, found ","/);
  fails(t, 'a = [1, [2, x]]', 'a[1][1]', 1, /invalid value "x"/);
  fails(t, 'a = { b = 1,\n c = 2 }', 'a', 1, /inline table must be on one line/);
  fails(t, 'a = {\n}', 'a', 1, /inline table must be on one line/);
  fails(t, 'a = { b = 1, }', 'a', 1, /trailing comma not allowed in an inline table/);
  fails(t, 'a = { b = 1 c = 2 }', 'a', 1, /expected "," or "}" in the inline table, found "c"/);
  fails(t, 'a = { b }', 'a.b', 1, /expected "=" after the key/);
  fails(t, 'a = { b = 1', 'a', 1, /inline table must be on one line/);
});
