// What a store handle must undo on close(): its watches, subscriptions, servers and status
// listeners. Each registration's own unsubscribe and close() share one idempotent disposer.

import type { Unsubscribe } from './types.ts';

export class Disposers {
  readonly #live = new Set<() => void>();

  track(dispose: () => void): Unsubscribe {
    let done = false;
    const off = (): void => {
      if (done) return;
      done = true;
      this.#live.delete(off);
      dispose();
    };
    this.#live.add(off);
    return off;
  }

  disposeAll(): void {
    for (const off of [...this.#live]) off();
  }
}
