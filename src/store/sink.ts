// Ordered, always-asynchronous delivery to one listener. Both stores deliver watch events,
// messages and status changes through a Sink so that (a) no caller can come to depend on
// synchronous delivery from the call that caused an event (the NATS store cannot offer it), and
// (b) events for one listener keep their order even when a new listener's initial `sync` is
// queued while changes are arriving.

export class Sink<E> {
  readonly #fn: (event: E) => void;
  readonly #onError: (err: unknown) => void;
  #queue: E[] = [];
  #scheduled = false;
  #active = true;

  constructor(fn: (event: E) => void, onError: (err: unknown) => void) {
    this.#fn = fn;
    this.#onError = onError;
  }

  push(event: E): void {
    if (!this.#active) return;
    this.#queue.push(event);
    if (!this.#scheduled) {
      this.#scheduled = true;
      queueMicrotask(() => this.#drain());
    }
  }

  /** Drops anything queued: after stop() the listener is never called again. */
  stop(): void {
    this.#active = false;
    this.#queue = [];
  }

  get active(): boolean {
    return this.#active;
  }

  #drain(): void {
    this.#scheduled = false;
    const batch = this.#queue;
    this.#queue = [];
    for (const event of batch) {
      if (!this.#active) return;
      try {
        this.#fn(event);
      } catch (err) {
        this.#onError(err);
      }
    }
  }
}
