// The Machines-API-shaped part of the admin listener (spec section 8, shaped like the Fly
// Machines API): list and create an app's Machines; get, destroy, start/stop/suspend/cordon/
// uncordon and `wait` on one. Paths are parsed here; the daemon's backend does the work.

import type http from 'node:http';

export type MachineAction = 'start' | 'stop' | 'suspend' | 'cordon' | 'uncordon';

export interface ApiReply {
  readonly status: number;
  readonly body: unknown;
}

export interface MachinesBackend {
  /** The app's Machines as JSON, or null when there is no such app. */
  machines(app: string): unknown[] | null;
  /** The Machine as JSON, or null when the app or the Machine does not exist. */
  machine(app: string, id: string): unknown | null;
  action(app: string, id: string, action: MachineAction, body: Record<string, unknown>): Promise<ApiReply>;
  wait(app: string, id: string, state: string, timeoutMs: number): Promise<ApiReply>;
  /** `POST /v1/apps/{app}/machines` (the app exists). */
  create(app: string, body: Record<string, unknown>): Promise<ApiReply>;
  /** `DELETE /v1/apps/{app}/machines/{id}` (the Machine exists). */
  destroy(app: string, id: string, force: boolean): Promise<ApiReply>;
}

const WAIT_STATES = ['started', 'stopped', 'suspended', 'destroyed', 'failed'];
/** Fly's wait takes a timeout in seconds; petrel bounds it like every other wait. */
const MAX_WAIT_S = 300;

const MACHINES_PATH = /^\/v1\/apps\/([^/]+)\/machines$/;
const MACHINE_PATH = /^\/v1\/apps\/([^/]+)\/machines\/([^/]+)(?:\/(start|stop|suspend|cordon|uncordon|wait))?$/;

/** Methods a Machines path takes, or null when the path is not one of ours. */
export function machineRouteMethods(path: string): readonly string[] | null {
  if (MACHINES_PATH.test(path)) return ['GET', 'HEAD', 'POST'];
  const m = MACHINE_PATH.exec(path);
  if (m === null) return null;
  const verb = m[3];
  if (verb === undefined) return ['GET', 'HEAD', 'DELETE'];
  if (verb === 'wait') return ['GET', 'HEAD'];
  return ['POST'];
}

export function apiError(status: number, code: string, reason: string): ApiReply {
  return { status, body: { error: { code, reason } } };
}

export type BodyRead = { readonly body: Record<string, unknown>; readonly error: null } | { readonly body: null; readonly error: ApiReply };

/** The body as a JSON object ({} when empty), or the 400 reply for anything else. */
export function jsonObject(rawBody: string): BodyRead {
  if (rawBody.trim() === '') return { body: {}, error: null };
  try {
    const parsed: unknown = JSON.parse(rawBody);
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return { body: null, error: apiError(400, 'PA08', 'the request body must be a JSON object') };
    return { body: parsed as Record<string, unknown>, error: null };
  } catch (err) {
    return { body: null, error: apiError(400, 'PA08', `malformed JSON body: ${(err as Error).message}`) };
  }
}

/** Handles a Machines path (token already checked, method already allowed). */
export async function handleMachineRoute(method: string, path: string, url: URL, rawBody: string, backend: MachinesBackend): Promise<ApiReply> {
  const all = MACHINES_PATH.exec(path);
  if (all !== null) {
    const app = decodeURIComponent(all[1]!);
    const list = backend.machines(app);
    if (list === null) return apiError(404, 'PA02', `no app ${app}`);
    if (method !== 'POST') return { status: 200, body: list };
    const read = jsonObject(rawBody);
    return read.error ?? backend.create(app, read.body);
  }
  const m = MACHINE_PATH.exec(path)!;
  const app = decodeURIComponent(m[1]!);
  const id = decodeURIComponent(m[2]!);
  const verb = m[3];
  if (backend.machine(app, id) === null) return apiError(404, 'PA03', `no Machine ${id} in app ${app}`);
  if (verb === undefined && method === 'DELETE') {
    const force = url.searchParams.get('force');
    if (force !== null && force !== 'true' && force !== 'false') return apiError(400, 'PA07', 'force must be true or false');
    return backend.destroy(app, id, force === 'true');
  }
  if (verb === undefined) return { status: 200, body: backend.machine(app, id) };
  if (verb === 'wait') {
    const state = url.searchParams.get('state') ?? 'started';
    if (!WAIT_STATES.includes(state)) return apiError(400, 'PA07', `state must be one of ${WAIT_STATES.join(', ')}`);
    const t = url.searchParams.get('timeout');
    const seconds = t === null ? 60 : Number(t);
    if (!Number.isInteger(seconds) || seconds < 1 || seconds > MAX_WAIT_S) return apiError(400, 'PA07', `timeout must be a whole number of seconds from 1 to ${MAX_WAIT_S}`);
    return backend.wait(app, id, state, seconds * 1000);
  }
  const read = jsonObject(rawBody);
  return read.error ?? backend.action(app, id, verb as MachineAction, read.body);
}

/** Reads a request body up to `max` bytes; null when it is larger. */
export async function readBody(req: http.IncomingMessage, max: number): Promise<string | null> {
  let n = 0;
  const parts: Buffer[] = [];
  for await (const chunk of req) {
    n += (chunk as Buffer).length;
    if (n > max) return null;
    parts.push(chunk as Buffer);
  }
  return Buffer.concat(parts).toString('utf8');
}

