// The error registry: codes are unique, and every proxy-made body starts with its code.

import t from 'tap';
import { E, errorBody } from '../src/proxy/errors.ts';

t.test('error codes are unique and every body starts with its code', async (t) => {
  const codes = Object.values(E).map((d) => d.code);
  t.equal(new Set(codes).size, codes.length, 'no code used twice');
  for (const d of Object.values(E)) {
    t.match(d.code, /^P[A-Z]\d\d$/, `${d.code} has the PXnn shape`);
    t.equal(errorBody(d).toString(), `${d.code} ${d.reason}\n`, `${d.code} body`);
  }
});
