// Errors are data (architecture habit 6): every failure of the cluster store is a StoreError with
// a stable code, so callers decide from fields, not from message text. The admin API maps them to
// HTTP with STORE_ERRORS; retry loops read `retryable`.

export type StoreErrorCode =
  | 'unavailable' // the backend cannot be reached (or the connection dropped mid-call)
  | 'conflict' // create of an existing key, or an update/delete whose expected revision is stale
  | 'timeout' // the backend or a request's responder did not answer in time
  | 'invalid' // a key, subject, value or argument the store refuses
  | 'closed' // this handle was closed
  | 'no-responder' // a request found nobody serving its subject
  | 'remote'; // a request's responder answered with an error (its code is in `remoteCode`)

export interface StoreErrorInfo {
  /** The HTTP status an API answering for this failure should use. */
  readonly status: number;
  /** Whether trying the same call again later can succeed. */
  readonly retryable: boolean;
}

export const STORE_ERRORS: Readonly<Record<StoreErrorCode, StoreErrorInfo>> = Object.freeze({
  unavailable: { status: 503, retryable: true },
  conflict: { status: 409, retryable: false },
  timeout: { status: 504, retryable: true },
  invalid: { status: 400, retryable: false },
  closed: { status: 503, retryable: false },
  'no-responder': { status: 503, retryable: true },
  remote: { status: 502, retryable: false },
});

export class StoreError extends Error {
  readonly code: StoreErrorCode;
  /** For `remote`: the `code` the responder's error carried, when it had one. */
  readonly remoteCode: string | undefined;

  constructor(code: StoreErrorCode, message: string, opts: { cause?: unknown; remoteCode?: string } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'StoreError';
    this.code = code;
    this.remoteCode = opts.remoteCode;
  }

  get status(): number {
    return STORE_ERRORS[this.code].status;
  }

  get retryable(): boolean {
    return STORE_ERRORS[this.code].retryable;
  }
}

export function isStoreError(err: unknown, code?: StoreErrorCode): err is StoreError {
  return err instanceof StoreError && (code === undefined || err.code === code);
}
