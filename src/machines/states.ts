// The Machine state machine of spec section 5, in one table. Every state change in petrel goes
// through `assertTransition`, so an illegal move (say `destroyed -> starting`) is refused loudly
// instead of silently corrupting what the data plane routes to.

import type { MachineState } from './runtime.ts';

/** from -> states it may move to. */
export const TRANSITIONS: Readonly<Record<MachineState, readonly MachineState[]>> = Object.freeze({
  created: ['starting', 'destroying'],
  // starting -> stopping: a stop (shutdown, reload) may overtake a slow start.
  starting: ['started', 'failed', 'stopping'],
  // started -> stopped / failed: the process exited on its own (clean exit 0 / anything else).
  started: ['stopping', 'suspending', 'stopped', 'failed'],
  stopping: ['stopped', 'failed'],
  stopped: ['starting', 'destroying'],
  suspending: ['suspended', 'failed'],
  // suspended -> starting is resume (Fly's start on a suspended Machine resumes it).
  // suspended -> failed: the frozen process was killed from outside.
  suspended: ['starting', 'stopping', 'failed'],
  failed: ['starting', 'destroying'],
  destroying: ['destroyed'],
  destroyed: [],
});

export class IllegalTransitionError extends Error {
  readonly machine: string;
  readonly from: MachineState;
  readonly to: MachineState;
  constructor(machine: string, from: MachineState, to: MachineState) {
    const allowed = TRANSITIONS[from];
    super(
      `Machine ${machine}: illegal state transition ${from} -> ${to}` +
        ` (from ${from} only ${allowed.length > 0 ? allowed.join(', ') : 'nothing'} is allowed)`,
    );
    this.name = 'IllegalTransitionError';
    this.machine = machine;
    this.from = from;
    this.to = to;
  }
}

export function canTransition(from: MachineState, to: MachineState): boolean {
  return TRANSITIONS[from].includes(to);
}

export function assertTransition(machine: string, from: MachineState, to: MachineState): void {
  if (!canTransition(from, to)) throw new IllegalTransitionError(machine, from, to);
}
