// Key and subject encoding for the cluster store: pure functions, checked against the NATS KV
// client's own key validation so an encoded key is always one NATS accepts.

import t from 'tap';
// The client's own check (exported for its tests); it does not look for empty tokens, so we do.
import { validateKey } from '@nats-io/kv/internal';
import { checkKey, checkSubject, decodeKey, encodeKey, matchSubject, subjectToken } from '../src/store/keys.ts';

const awkward = [
  'a',
  'example.com',
  '*.example.com',
  'my_app',
  '_kv',
  '_kv_x',
  'a..b',
  '...',
  '.lead',
  'trail.',
  '.',
  'ünïcødé',
  '🦤',
  'a b',
  'with/slash',
  'a=b',
  '>',
  '*',
  'tab\there',
  'Upper.Case',
  '-dash-',
  '_2e',
];

t.test('encoded keys are valid NATS KV keys and decode back', async (t) => {
  for (const k of awkward) {
    checkKey(k);
    const e = encodeKey(k);
    t.doesNotThrow(() => validateKey(e), `${JSON.stringify(k)} -> ${e} is a valid KV key`);
    t.notOk(e.startsWith('_kv'), `${e} does not use the reserved _kv prefix`);
    t.notOk(e.includes('..'), `${e} has no empty token`);
    t.equal(decodeKey(e), k, `${e} decodes to ${JSON.stringify(k)}`);
  }
  t.equal(new Set(awkward.map(encodeKey)).size, awkward.length, 'no two keys share an encoding');
});

t.test('readable where it can be', async (t) => {
  t.equal(encodeKey('api.example.com'), 'api.example.com');
  t.equal(encodeKey('*.example.com'), '_2a.example.com');
  t.equal(encodeKey('my_app'), 'my_5fapp');
  t.equal(encodeKey('a..b'), 'a._2eb');
  t.equal(encodeKey('.a.'), '_2ea_2e');
});

t.test('decodeKey refuses what we would not have written', async (t) => {
  for (const e of ['', '_', '_2', '_zz', '_2A', 'a b', 'my_app', 'a._2eb_', '_ff', 'x*', 'api_2eexample']) {
    t.equal(decodeKey(e), null, JSON.stringify(e));
  }
});

t.test('subjects', async (t) => {
  t.equal(subjectToken('*.example.com'), '_2a_2eexample_2ecom', 'one token, dots escaped');
  t.doesNotThrow(() => checkSubject(`cert.${subjectToken('*.example.com')}`, false));
  t.throws(() => checkSubject('a.*', false), { code: 'invalid' });
  t.doesNotThrow(() => checkSubject('a.*.c', true));
  t.doesNotThrow(() => checkSubject('a.>', true));
  t.throws(() => checkSubject('a.>.c', true), { code: 'invalid' });
  t.throws(() => checkSubject('a..c', true), { code: 'invalid' });
  t.throws(() => checkSubject('.a', true), { code: 'invalid' });
  t.throws(() => checkSubject('a.', true), { code: 'invalid' });
  t.throws(() => subjectToken(''), { code: 'invalid' });
  const cases: Array<[string, string, boolean]> = [
    ['a.b', 'a.b', true],
    ['a.b', 'a.c', false],
    ['a.*', 'a.b', true],
    ['a.*', 'a.b.c', false],
    ['a.*', 'a', false],
    ['a.>', 'a.b', true],
    ['a.>', 'a.b.c', true],
    ['a.>', 'a', false],
    ['>', 'a', true],
    ['*.b', 'a.b', true],
    ['a.b', 'a.b.c', false],
  ];
  for (const [p, s, want] of cases) t.equal(matchSubject(p, s), want, `${p} ${want ? 'matches' : 'does not match'} ${s}`);
});
