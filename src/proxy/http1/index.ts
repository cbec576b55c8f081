// petrel's HTTP/1.1 codec for the raw-socket hot path: strict head parsers for both directions,
// a chunked-body scanner, and head serializers for the forwarder.

export {
  H_OTHER,
  H_HOST,
  H_CONTENT_LENGTH,
  H_TRANSFER_ENCODING,
  H_CONNECTION,
  H_KEEP_ALIVE,
  H_PROXY_CONNECTION,
  H_TE,
  H_TRAILER,
  H_UPGRADE,
  H_EXPECT,
  H_FLY_CLIENT_IP,
  H_X_FORWARDED_PROTO,
  H_X_FORWARDED_SSL,
  H_X_FORWARDED_PORT,
  H_FLY_FORWARDED_PORT,
  H_FLY_REGION,
  H_FLY_REQUEST_ID,
  H_VIA,
  H_X_FORWARDED_FOR,
  H_SERVER,
  H_CL_LOOKALIKE,
  H_TE_LOOKALIKE,
  H_FLY_FORCE_INSTANCE_ID,
  H_FLY_PREFER_INSTANCE_ID,
  H_FLY_FORCE_REGION,
  H_FLY_PREFER_REGION,
  KIND_NAMES,
} from './chars.ts';
export { MessageHead, DROP, KIND_MASK, SLOTS, MAX_CONNECTION_TOKENS } from './head.ts';
export {
  RequestHead,
  RequestHeadParser,
  REQUEST_DROP_KINDS,
  type RequestLimits,
  FORM_ORIGIN,
  FORM_ABSOLUTE,
  FORM_ASTERISK,
  MAX_LEADING_CRLF,
} from './request.ts';
export { ResponseHead, ResponseHeadParser, BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_CLOSE, BODY_UPGRADE } from './response.ts';
export { ChunkedScanner, DEFAULT_MAX_EXT_BYTES, DEFAULT_MAX_TRAILER_BYTES } from './chunked.ts';
export { buildRequestHead, buildResponseHead, requestHeadString, responseHeadString, forwardedFor } from './serialize.ts';
