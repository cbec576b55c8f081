// Driver registry: one driver instance per kind per node. The manager builds it once, passing
// itself as DriverEvents so drivers can report Machines that change state on their own.

import type { Logger } from 'pino';
import type { DriverKind } from '../../config/types.ts';
import type { DriverEvents, MachineDriver } from '../runtime.ts';
import { ProcessDriver } from './process.ts';
import { StaticDriver } from './static.ts';
import { MachinesApiDriver } from './machinesApi.ts';

export type DriverRegistry = ReadonlyMap<DriverKind, MachineDriver>;

export interface DriverOptions {
  readonly logger: Logger;
  readonly events: DriverEvents;
}

/** A function that builds a registry; the manager takes one so tests can swap drivers. */
export type DriverFactory = (opts: DriverOptions) => DriverRegistry;

export const createDrivers: DriverFactory = (opts) => {
  const drivers = new Map<DriverKind, MachineDriver>();
  drivers.set('static', new StaticDriver());
  drivers.set('process', new ProcessDriver({ logger: opts.logger, events: opts.events }));
  drivers.set('machines-api', new MachinesApiDriver());
  return drivers;
};

export function driverFor(registry: DriverRegistry, kind: DriverKind): MachineDriver {
  const d = registry.get(kind);
  if (d === undefined) throw new Error(`no Machine driver for kind ${JSON.stringify(kind)}`);
  return d;
}

export { ProcessDriver, StaticDriver };
