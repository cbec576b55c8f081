// Machines created through the admin API (`POST /v1/apps/{app}/machines`, process driver). With
// the embedded store the app files are the config, so these live beside it: every config the
// daemon applies (start, reload, create, destroy) is the files' config with these Machines added
// to their apps, and the manager reconciles against that as usual. They last until the daemon
// stops; the cluster store keeps Machines for good.

import type { AppConfig, Config, MachineConfig } from '../config/types.ts';

export interface MergeNotice {
  readonly machine: string;
  readonly reason: string;
}

export class ApiMachines {
  private readonly byId = new Map<string, MachineConfig>();

  has(id: string): boolean {
    return this.byId.has(id);
  }

  add(mc: MachineConfig): void {
    this.byId.set(mc.id, mc);
  }

  delete(id: string): boolean {
    return this.byId.delete(id);
  }

  /**
   * `config` with the API-made Machines added to their apps. A Machine whose app is gone, or
   * whose id an app file now uses, is dropped (and reported): the files win.
   */
  merge(config: Config): { config: Config; dropped: MergeNotice[] } {
    if (this.byId.size === 0) return { config, dropped: [] };
    const fileIds = new Set<string>();
    for (const app of config.apps.values()) for (const mc of app.machines) fileIds.add(mc.id);
    const extra = new Map<string, MachineConfig[]>();
    const dropped: MergeNotice[] = [];
    for (const mc of this.byId.values()) {
      let reason: string | null = null;
      if (!config.apps.has(mc.app)) reason = `app ${mc.app} is no longer configured`;
      else if (fileIds.has(mc.id)) reason = `an app file now defines a Machine with id ${mc.id}`;
      if (reason !== null) {
        this.byId.delete(mc.id);
        dropped.push({ machine: mc.id, reason });
        continue;
      }
      let list = extra.get(mc.app);
      if (list === undefined) extra.set(mc.app, (list = []));
      list.push(mc);
    }
    const apps = new Map<string, AppConfig>();
    for (const [name, app] of config.apps) {
      const more = extra.get(name);
      apps.set(name, more === undefined ? app : Object.freeze({ ...app, machines: Object.freeze([...app.machines, ...more]) }));
    }
    return { config: Object.freeze({ node: config.node, apps }), dropped };
  }
}
