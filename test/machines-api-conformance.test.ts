// The shared driver conformance suite, run on the machines-api driver: each case drives a
// process Machine of a real petrel node through that node's admin API.

import t from 'tap';
import { MachinesApiDriver } from '../src/machines/drivers/machinesApi.ts';
import { driverConformance } from './helpers/machines-conformance.ts';
import { appConfig, machineConfig, waitFor } from './helpers/machines-fixtures.ts';
import { DEMO_MACHINE, startPetrel } from './helpers/petrel.ts';

driverConformance(t, {
  name: 'machines-api',
  ownsProcess: true,
  make: () => new MachinesApiDriver(),
  machine: async (t) => {
    const host = await startPetrel({
      apps: {
        remote: `app = "remote"\n[http_service]\ninternal_port = 8080\n[[machines]]\nid = "api-1"\ndriver = "process"\ncmd = ["node", ${JSON.stringify(DEMO_MACHINE)}]\n`,
      },
    });
    t.teardown(() => host.stop());
    const remote = host.daemon.manager.get('api-1')!;
    await waitFor(() => remote.slot(8080).healthy, 20_000, 'the API host runs the Machine');
    const mc = machineConfig({
      id: 'api-1',
      app: 'hello',
      driver: 'machines-api',
      api: { url: `http://127.0.0.1:${host.adminPort}`, token: 'test-token', tokenEnv: null, app: 'remote' },
    });
    return { mc, app: appConfig({ name: 'hello' }) };
  },
});
