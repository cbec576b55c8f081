// One shared coarse clock for connection deadlines (header read, idle, response timeouts).
// A timer per connection or per request would cost a closure and a timer-list insertion each
// time; instead each connection stores its next deadline and one interval sweeps them all.
// Granularity is TICK_MS: timeouts fire up to one tick late, which is fine for seconds-long limits.

export interface Sweepable {
  /** performance.now() value after which onDeadline() should run; Infinity = none. */
  deadline: number;
  onDeadline(now: number): void;
}

const TICK_MS = 100;
const members = new Set<Sweepable>();
let timer: NodeJS.Timeout | null = null;

function sweep(): void {
  const now = performance.now();
  for (const m of members) if (now >= m.deadline) m.onDeadline(now);
  if (members.size === 0 && timer !== null) {
    clearInterval(timer);
    timer = null;
  }
}

export function watch(m: Sweepable): void {
  members.add(m);
  if (timer === null) {
    timer = setInterval(sweep, TICK_MS);
    timer.unref();
  }
}

export function unwatch(m: Sweepable): void {
  members.delete(m);
}
