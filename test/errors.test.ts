import t from 'tap';
import { E, errorBody } from '../src/proxy/errors.ts';
t.test('error codes are unique and every body starts with its code', async (t) => {
  const codes = Object.values(E).map((d) => d.code);
  t.equal(new Set(codes).size, codes.length);
  t.match(errorBody(E.NO_MACHINE).toString(), /^PR01 /);
});
