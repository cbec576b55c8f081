// The single publication point between the planes: the control plane swaps in a whole new
// snapshot; the data plane reads `current` once per connection or request and keeps that
// reference for the rest of it, so a reload never changes a request half-way.

import type { Snapshot } from './snapshot.ts';

export class SnapshotHolder {
  current: Snapshot;
  constructor(initial: Snapshot) {
    this.current = initial;
  }
  get(): Snapshot {
    return this.current;
  }
  swap(next: Snapshot): Snapshot {
    const prev = this.current;
    this.current = next;
    return prev;
  }
}
