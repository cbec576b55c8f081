// Ordering of an owner's Machine reports (records.ts): a record that arrives after a fresher
// report (the owner's reply to a forwarded start, a lagging watch) must not win, or a node routes
// to the ports of the Machine's previous run (seen as 502 PC01 on a loaded machine).

import t from 'tap';
import { asMachineDoc, olderReport, type MachineDoc } from '../src/cluster/records.ts';

const doc = (o: Partial<MachineDoc> = {}): MachineDoc => ({
  id: 'm1',
  app: 'web',
  owner: 'n1',
  state: 'started',
  host: '127.0.0.1',
  ports: { '8080': 40001 },
  healthy: { '8080': true },
  lastError: '',
  updatedAt: 1,
  epoch: 1000,
  seq: 5,
  ...o,
});

t.test('older: lower seq in the same epoch, or an earlier epoch (the owner restarted)', async (t) => {
  t.ok(olderReport(doc({ seq: 4 }), doc()));
  t.notOk(olderReport(doc(), doc()), 'the same report is not older (re-applied after a reload)');
  t.notOk(olderReport(doc({ seq: 6 }), doc()));
  t.ok(olderReport(doc({ epoch: 999, seq: 50 }), doc()), 'a previous process of the owner');
  t.notOk(olderReport(doc({ epoch: 1001, seq: 1 }), doc()), 'a restarted owner counts from 1 again');
  t.notOk(olderReport(doc({ owner: 'n2', seq: 1 }), doc()), 'another owner: its report is taken');
});

t.test('a record needs epoch and seq', async (t) => {
  t.ok(asMachineDoc(doc()));
  const { epoch: _e, ...noEpoch } = doc();
  const { seq: _s, ...noSeq } = doc();
  t.equal(asMachineDoc(noEpoch), null);
  t.equal(asMachineDoc(noSeq), null);
  t.equal(asMachineDoc({ ...doc(), seq: '5' }), null);
});
