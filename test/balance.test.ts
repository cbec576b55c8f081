// Unit tests of the pure selector (src/balance/select.ts) over hand-made Machine slots: bands,
// least loaded, random among equals, region, routability, health, exclusions, and why nothing
// was picked (queue at the hard limit vs. 503 for nothing usable).

import t from 'tap';
import { ALL_AT_HARD, NONE_USABLE, Selector, type SelectInput } from '../src/balance/select.ts';
import type { MachineConfig } from '../src/config/types.ts';
import { MachineRuntime, type MachineSlot, type MachineState } from '../src/machines/runtime.ts';

const PORT = 8080;

interface SlotOpts {
  region?: string;
  load?: number;
  state?: MachineState;
  cordoned?: boolean;
  healthy?: boolean;
}

function machineConfig(id: string, region: string): MachineConfig {
  return Object.freeze({
    id,
    app: 'web',
    region,
    driver: 'static',
    address: '127.0.0.1:1',
    cmd: null,
    api: null,
    node: null,
    cwd: '/',
    env: new Map<string, string>(),
    killSignal: 'SIGINT',
    killTimeoutMs: 5000,
    source: { file: 'web.toml', line: 1 },
  });
}

function slot(id: string, o: SlotOpts = {}): MachineSlot {
  const m = new MachineRuntime(machineConfig(id, o.region ?? 'ams'));
  m.state = o.state ?? 'started';
  m.cordoned = o.cordoned ?? false;
  const s = m.slot(PORT);
  s.load = o.load ?? 0;
  s.healthy = o.healthy ?? true;
  return s;
}

function input(slots: MachineSlot[], softLimit: number, hardLimit = Infinity, localRegion = 'ams'): SelectInput {
  return { slots, softLimit, hardLimit, localRegion };
}

function ids(s: MachineSlot | null): string | null {
  return s === null ? null : s.machine.id;
}

/** Picks `n` times and counts the Machine ids chosen. */
function draw(sel: Selector, inp: SelectInput, n: number, exclude: MachineSlot[] | null = null): Map<string | null, number> {
  const seen = new Map<string | null, number>();
  for (let i = 0; i < n; i++) {
    const id = ids(sel.select(inp, exclude));
    seen.set(id, (seen.get(id) ?? 0) + 1);
  }
  return seen;
}

t.test('a Machine under its soft limit wins over one between soft and hard', async (t) => {
  const sel = new Selector();
  const between = slot('between', { load: 3 });
  const under = slot('under', { load: 2 });
  // Order in the list must not matter.
  t.equal(ids(sel.select(input([between, under], 3, 10), null)), 'under');
  t.equal(ids(sel.select(input([under, between], 3, 10), null)), 'under');
  const a = slot('a', { load: 5 });
  const b = slot('b', { load: 4 });
  t.equal(ids(sel.select(input([a, b], 5, 10), null)), 'b', 'under soft (4 < 5) preferred to at soft (5)');
});

t.test('between soft and hard still gets traffic when every Machine is at or over soft', async (t) => {
  const sel = new Selector();
  const a = slot('a', { load: 6 });
  const b = slot('b', { load: 4 });
  t.equal(ids(sel.select(input([a, b], 3, 10), null)), 'b', 'least loaded of the between band');
  t.equal(ids(sel.select(input([b, a], 3, 10), null)), 'b');
});

t.test('least loaded among Machines under the soft limit', async (t) => {
  const sel = new Selector();
  const slots = [slot('a', { load: 3 }), slot('b', { load: 1 }), slot('c', { load: 2 }), slot('d', { load: 4 })];
  t.equal(ids(sel.select(input(slots, 20), null)), 'b');
  t.equal(ids(sel.select(input([...slots].reverse(), 20), null)), 'b');
});

t.test('random among equals: every tied Machine gets picked over many draws', async (t) => {
  const sel = new Selector();
  const slots = [slot('a', { load: 1 }), slot('b', { load: 1 }), slot('c', { load: 1 }), slot('busy', { load: 2 })];
  const seen = draw(sel, input(slots, 20), 600);
  t.equal(seen.get('busy'), undefined, 'the more loaded Machine is never picked');
  for (const id of ['a', 'b', 'c']) t.ok((seen.get(id) ?? 0) > 0, `${id} picked at least once (${seen.get(id) ?? 0}/600)`);
  // Two equal Machines: both picked (1 in 2^200 chance of a false failure).
  const two = draw(sel, input([slot('x'), slot('y')], 20), 200);
  t.ok((two.get('x') ?? 0) > 0 && (two.get('y') ?? 0) > 0, `both of two equals picked: ${JSON.stringify([...two])}`);
});

t.test('the local region comes before other regions', async (t) => {
  const sel = new Selector();
  const far = slot('far', { region: 'iad', load: 0 });
  const near = slot('near', { region: 'ams', load: 2 });
  t.equal(ids(sel.select(input([far, near], 20), null)), 'near', 'local wins over a less loaded remote one in the same band');
  t.equal(ids(sel.select(input([near, far], 20), null)), 'near');
  // With no local candidate left, a remote one is used.
  const sick = slot('sick', { region: 'ams', healthy: false });
  t.equal(ids(sel.select(input([sick, far], 20), null)), 'far', 'remote used when the local one is unhealthy');
  const full = slot('full', { region: 'ams', load: 5 });
  t.equal(ids(sel.select(input([full, far], 2, 5), null)), 'far', 'remote used when the local one is at hard_limit');
  // Several remote Machines of equal standing share the traffic.
  const r1 = slot('r1', { region: 'iad' });
  const r2 = slot('r2', { region: 'ord' });
  const seen = draw(sel, input([r1, r2], 20), 200);
  t.ok((seen.get('r1') ?? 0) > 0 && (seen.get('r2') ?? 0) > 0, 'remote equals both picked');
});

t.test(
  'spec 3.4: a local Machine between soft and hard keeps traffic instead of a remote one under soft',
  {
    // The spec contradicts itself here (point 3: "between soft and hard only when every candidate
    // is at or above soft"; point 4: "leaves the local region only when every local Machine is
    // unhealthy, stopped or at hard_limit"). select.ts follows point 3 (Fly's behaviour). Kept as
    // a todo until the spec says which one wins; multi-region balancing is a later issue.
    todo:
      'spec section 3 points 3 and 4 disagree; select.ts compares bands before distance, so a remote under-soft Machine wins',
  },
  async (t) => {
    const sel = new Selector();
    const local = slot('local', { region: 'ams', load: 3 });
    const remote = slot('remote', { region: 'iad', load: 0 });
    t.equal(ids(sel.select(input([remote, local], 2, 10), null)), 'local');
  },
);

t.test('unroutable and unhealthy Machines are never picked', async (t) => {
  const sel = new Selector();
  const states: MachineState[] = ['created', 'starting', 'stopping', 'stopped', 'suspending', 'suspended', 'failed', 'destroying', 'destroyed'];
  const ok = slot('ok', { load: 9 });
  const bad = [
    ...states.map((state) => slot(`st-${state}`, { state })),
    slot('cordoned', { cordoned: true }),
    slot('unhealthy', { healthy: false }),
  ];
  const seen = draw(sel, input([...bad, ok], 20), 50);
  t.same([...seen.keys()], ['ok'], 'only the healthy started Machine, although it is the most loaded');

  const none = sel.select(input(bad, 20), null);
  t.equal(none, null, 'nothing usable');
  t.equal(sel.lastReason, NONE_USABLE, 'NONE_USABLE: not a reason to queue');
});

t.test('exclusions are honoured', async (t) => {
  const sel = new Selector();
  const a = slot('a');
  const b = slot('b', { load: 5 });
  t.equal(ids(sel.select(input([a, b], 20), [a])), 'b', 'excluded least-loaded Machine skipped');
  const seen = draw(sel, input([a, b], 20), 50, [a]);
  t.same([...seen.keys()], ['b']);
  t.equal(sel.select(input([a, b], 20), [a, b]), null, 'everything excluded');
  t.equal(sel.lastReason, NONE_USABLE, 'excluded Machines do not count as busy');
  // Excluded one free, the other at hard: the request should queue for the busy one.
  const full = slot('full', { load: 2 });
  t.equal(sel.select(input([a, full], 1, 2), [a]), null);
  t.equal(sel.lastReason, ALL_AT_HARD, 'the only non-excluded Machine is at hard: queue');
});

t.test('at hard_limit never picked; lastReason tells ALL_AT_HARD from NONE_USABLE', async (t) => {
  const sel = new Selector();
  const a = slot('a', { load: 2 });
  const b = slot('b', { load: 3 }); // over hard (a reload may lower the limit under running load)
  t.equal(sel.select(input([a, b], 1, 2), null), null);
  t.equal(sel.lastReason, ALL_AT_HARD);

  const c = slot('c', { load: 1 });
  t.equal(ids(sel.select(input([a, b, c], 1, 2), null)), 'c', 'the one below hard, although over soft');

  // A failed selection after a successful one still reports the right reason, and vice versa.
  t.equal(sel.select(input([slot('down', { healthy: false })], 1, 2), null), null);
  t.equal(sel.lastReason, NONE_USABLE);
  t.equal(sel.select(input([a, slot('down2', { state: 'stopped' })], 1, 2), null), null);
  t.equal(sel.lastReason, ALL_AT_HARD, 'one usable at hard plus one unusable: queue');

  t.equal(sel.select(input([], 1, 2), null), null, 'no Machines at all');
  t.equal(sel.lastReason, NONE_USABLE);

  // hard_limit unset (Infinity): never at hard.
  const huge = slot('huge', { load: 1_000_000 });
  t.equal(ids(sel.select(input([huge], 20), null)), 'huge');
});

t.test('the selector only reads: it never changes load or state', async (t) => {
  const sel = new Selector();
  const a = slot('a', { load: 1 });
  const b = slot('b', { load: 2 });
  sel.select(input([a, b], 20), null);
  t.equal(a.load, 1);
  t.equal(b.load, 2);
});
