import t from 'tap';
import { E, errorBody } from '../src/proxy/errors.ts';
t.test('error codes are unique', async (t) => {
  const codes = Object.values(E).map((d) => d.code);
  t.equal(new Set(codes).size, codes.length);
  t.match(errorBody(E.NO_MACHINE).toString(), /^PR01 /);
});
