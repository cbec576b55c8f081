// The documents petrel nodes share through the cluster store (spec section 6), and the checks
// applied when reading them: values written by another node (or another version of petrel) are
// not trusted to have the right shape.

import type { MachineState } from '../machines/runtime.ts';
import { TRANSITIONS } from '../machines/states.ts';

/** `apps/<name>`: an app file as deployed (`petrel apps deploy`). */
export interface AppDoc {
  readonly name: string;
  /** The app file's TOML text, validated by the deploying node with the same loader. */
  readonly config: string;
  /** Node id of the deployer: the default owner of the app's Machines. */
  readonly deployedBy: string;
  readonly deployedAt: number;
}

/**
 * A `process` Machine created through the admin API (not in an app file): what its owner needs
 * to run it, kept in its record so every node knows it and the owner can restart it.
 */
export interface MachineSpec {
  readonly region: string;
  readonly cmd: readonly string[];
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
  readonly killSignal: string;
  readonly killTimeoutMs: number;
}

/** `machines/<id>`: a Machine as its owner reports it. */
export interface MachineDoc {
  readonly id: string;
  readonly app: string;
  readonly owner: string;
  readonly state: MachineState;
  readonly host: string;
  /** internal port → port on host */
  readonly ports: Readonly<Record<string, number>>;
  /** internal port → checks passing */
  readonly healthy: Readonly<Record<string, boolean>>;
  readonly lastError: string;
  readonly updatedAt: number;
  /**
   * Order of the owner's reports: `epoch` is when the owner's process started, `seq` counts the
   * changes it reported since. A record can arrive after a fresher report (the owner's reply to a
   * forwarded start, or a lagging watch); the older one must not win.
   */
  readonly epoch: number;
  readonly seq: number;
  /** Only for Machines created through the admin API. */
  readonly spec?: MachineSpec;
}

/** `nodes/<id>`: a node's identity and heartbeat. */
export interface NodeDoc {
  readonly id: string;
  readonly region: string;
  /** From the node config's `[location]` (region distance); null when not configured. */
  readonly location: { readonly lat: number; readonly lon: number } | null;
  readonly admin: string;
  readonly startedAt: number;
  readonly heartbeatAt: number;
}

/** A node's per-Machine load, published on `load.<node>` (core NATS, not stored). */
export interface LoadMessage {
  readonly node: string;
  /** true: replaces everything known from this node; false: only these Machines changed. */
  readonly full: boolean;
  /** Machine id → internal port → in-flight requests or connections through that node. */
  readonly loads: Readonly<Record<string, Readonly<Record<string, number>>>>;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const isString = (v: unknown): v is string => typeof v === 'string';
const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

export function asAppDoc(v: unknown): AppDoc | null {
  if (!isObject(v) || !isString(v['name']) || !isString(v['config']) || !isString(v['deployedBy']) || !isNumber(v['deployedAt'])) return null;
  return v as unknown as AppDoc;
}

function numberMap(v: unknown): boolean {
  return isObject(v) && Object.values(v).every(isNumber);
}

export function asMachineDoc(v: unknown): MachineDoc | null {
  if (!isObject(v)) return null;
  const ok =
    isString(v['id']) &&
    isString(v['app']) &&
    isString(v['owner']) &&
    isString(v['state']) &&
    Object.hasOwn(TRANSITIONS, v['state']) &&
    isString(v['host']) &&
    numberMap(v['ports']) &&
    isObject(v['healthy']) &&
    Object.values(v['healthy']).every((b) => typeof b === 'boolean') &&
    isString(v['lastError']) &&
    isNumber(v['updatedAt']) &&
    isNumber(v['epoch']) &&
    isNumber(v['seq']) &&
    (v['spec'] === undefined || isMachineSpec(v['spec']));
  return ok ? (v as unknown as MachineDoc) : null;
}

function isMachineSpec(v: unknown): v is MachineSpec {
  return (
    isObject(v) &&
    isString(v['region']) &&
    Array.isArray(v['cmd']) &&
    v['cmd'].length > 0 &&
    v['cmd'].every(isString) &&
    isString(v['cwd']) &&
    isObject(v['env']) &&
    Object.values(v['env']).every(isString) &&
    isString(v['killSignal']) &&
    isNumber(v['killTimeoutMs'])
  );
}

export function asNodeDoc(v: unknown): NodeDoc | null {
  if (!isObject(v) || !isString(v['id']) || !isString(v['region']) || !isString(v['admin']) || !isNumber(v['startedAt']) || !isNumber(v['heartbeatAt'])) return null;
  return v as unknown as NodeDoc;
}

export function asLoadMessage(v: unknown): LoadMessage | null {
  if (!isObject(v) || !isString(v['node']) || typeof v['full'] !== 'boolean' || !isObject(v['loads'])) return null;
  return Object.values(v['loads']).every(numberMap) ? (v as unknown as LoadMessage) : null;
}

/** Whether report `a` is older than report `b` of the same Machine (see MachineDoc.seq). */
export function olderReport(a: MachineDoc, b: MachineDoc): boolean {
  return a.owner === b.owner && (a.epoch < b.epoch || (a.epoch === b.epoch && a.seq < b.seq));
}
