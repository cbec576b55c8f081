// One registry of proxy error codes. Errors are data: the retry logic reads `retryable`, the
// responder reads `status`, the access log reads `code`. Codes are stable: never renumber one.

export type ErrorSource = 'downstream' | 'upstream' | 'internal';

export interface ProxyErrorDef {
  readonly code: string;
  readonly status: number;
  readonly source: ErrorSource;
  /** Safe to try another Machine: nothing of the request reached an app that could act on it. */
  readonly retryable: boolean;
  readonly reason: string;
}

function def(code: string, status: number, source: ErrorSource, retryable: boolean, reason: string): ProxyErrorDef {
  return Object.freeze({ code, status, source, retryable, reason });
}

export const E = Object.freeze({
  // Routing and balancing (PR)
  NO_MACHINE: def('PR01', 503, 'internal', false, 'no healthy Machine can take this request'),
  UNKNOWN_HOST: def('PR02', 404, 'downstream', false, 'no app is configured for this host'),
  MISDIRECTED: def('PR03', 421, 'downstream', false, 'the Host header does not match the TLS server name'),
  QUEUE_FULL: def('PR04', 503, 'internal', false, 'every Machine is at its hard limit and the queue is full'),
  QUEUE_TIMEOUT: def('PR05', 503, 'internal', false, 'every Machine stayed at its hard limit for the whole queue timeout'),
  APP_CONN_LIMIT: def('PR06', 503, 'internal', false, 'the app has reached its connection limit on this node'),
  NO_SERVICE: def('PR07', 404, 'downstream', false, 'the app has no service on this port'),
  SHUTTING_DOWN: def('PR08', 503, 'internal', false, 'this node is shutting down'),
  INSTANCE_UNAVAILABLE: def('PR09', 503, 'internal', false, 'the Machine or region this request forces cannot take it'),
  // Upstream connection and response (PC)
  CONNECT_REFUSED: def('PC01', 502, 'upstream', true, 'the Machine refused the connection'),
  CONNECT_TIMEOUT: def('PC02', 504, 'upstream', true, 'connecting to the Machine timed out'),
  CONNECT_FAILED: def('PC03', 502, 'upstream', true, 'connecting to the Machine failed'),
  RESPONSE_TIMEOUT: def('PC04', 504, 'upstream', false, 'the Machine did not answer within the response timeout'),
  BAD_RESPONSE: def('PC05', 502, 'upstream', false, 'the Machine sent an invalid HTTP response'),
  UPSTREAM_CLOSED: def('PC06', 502, 'upstream', false, 'the Machine closed the connection before a complete response'),
  UPSTREAM_RESET: def('PC07', 502, 'upstream', false, 'the Machine reset the connection'),
  RETRY_BODY_TOO_LARGE: def('PC08', 502, 'upstream', false, 'the connection failed and the request body was too large to retry'),
  UPGRADE_REFUSED: def('PC09', 502, 'upstream', false, 'the Machine did not accept the protocol upgrade'),
  // Downstream HTTP framing and limits (PH)
  BAD_REQUEST: def('PH01', 400, 'downstream', false, 'malformed HTTP request'),
  HEADERS_TOO_LARGE: def('PH02', 431, 'downstream', false, 'request headers are larger than the limit'),
  TOO_MANY_HEADERS: def('PH03', 431, 'downstream', false, 'request has more header fields than the limit'),
  URI_TOO_LONG: def('PH04', 414, 'downstream', false, 'request target is longer than the limit'),
  HEADER_TIMEOUT: def('PH05', 408, 'downstream', false, 'request headers did not arrive within the header read timeout'),
  AMBIGUOUS_LENGTH: def('PH06', 400, 'downstream', false, 'request has both Content-Length and Transfer-Encoding'),
  BAD_CONTENT_LENGTH: def('PH07', 400, 'downstream', false, 'request has an invalid or repeated Content-Length'),
  BAD_TRANSFER_ENCODING: def('PH08', 400, 'downstream', false, 'request has an unsupported or obfuscated Transfer-Encoding'),
  BARE_CR_LF: def('PH09', 400, 'downstream', false, 'request uses a bare CR or LF as a line ending'),
  MISSING_HOST: def('PH10', 400, 'downstream', false, 'request has no Host header or more than one'),
  BAD_VERSION: def('PH11', 505, 'downstream', false, 'HTTP version not supported'),
  BAD_CHUNK: def('PH12', 400, 'downstream', false, 'malformed chunked request body'),
  CLIENT_ABORTED: def('PH13', 499, 'downstream', false, 'the client closed the connection before the response was complete'),
  BODY_TIMEOUT: def('PH14', 408, 'downstream', false, 'the request body stalled longer than the idle timeout'),
  BAD_METHOD: def('PH15', 400, 'downstream', false, 'request method is not a valid token'),
  // TLS (PT)
  TLS_HANDSHAKE: def('PT01', 0, 'downstream', false, 'TLS handshake failed'),
  TLS_TIMEOUT: def('PT02', 0, 'downstream', false, 'TLS handshake did not finish within the handshake timeout'),
  NO_CERT: def('PT05', 0, 'downstream', false, 'no certificate matches the requested server name'),
  // Machines (PM)
  WAKE_TIMEOUT: def('PM03', 503, 'internal', false, 'the Machine did not become ready within the wake timeout'),
  // Internal (PX)
  INTERNAL: def('PX01', 500, 'internal', false, 'internal proxy error'),
});

export type ErrorKey = keyof typeof E;

/** A proxy error as a value: carried through promise rejections, read by retry and log code. */
export class ProxyError extends Error {
  readonly def: ProxyErrorDef;
  constructor(d: ProxyErrorDef, detail?: string) {
    super(detail ? `${d.reason}: ${detail}` : d.reason);
    this.def = d;
  }
}

const bodies = new Map<ProxyErrorDef, Buffer>();
/** Plain-text body for a proxy-made error response, made once per code. */
export function errorBody(d: ProxyErrorDef): Buffer {
  let b = bodies.get(d);
  if (b === undefined) {
    b = Buffer.from(`${d.code} ${d.reason}\n`, 'latin1');
    bodies.set(d, b);
  }
  return b;
}
