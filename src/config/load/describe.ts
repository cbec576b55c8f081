// The human summary `petrel check-config` prints: one line per node setting group, app, service
// and Machine, and one for an app's extra certificate names.

import { formatDuration, formatSize } from '../durations.ts';
import type { AppConfig, NodeConfig, PortConfig, StoreSettings } from '../types.ts';

export function describeNode(node: NodeConfig, appCount: number): string[] {
  const listen = node.listen.map((l) => `${l.port} -> ${l.host}:${l.bindPort}`);
  const token = node.admin.token === '' ? 'token generated at start' : 'token set';
  const { limits } = node;
  return [
    `node ${node.nodeId}, region ${node.region}, default domain ${node.defaultDomain} (${node.file})`,
    `listen: ${[...listen, `other ports on ${node.bindHost}`].join(', ')}`,
    `admin: ${node.admin.host}:${node.admin.port}, ${token}`,
    `limits: header bytes ${formatSize(limits.maxHeaderBytes)}, header count ${limits.maxHeaderCount}, ` +
      `header read ${formatDuration(limits.headerReadTimeoutMs)}, ` +
      `connect ${formatDuration(limits.connectTimeoutMs)} x${limits.connectAttempts}, ` +
      `response ${formatDuration(limits.responseTimeoutMs)}, ` +
      `queue ${limits.queueLength}/${formatDuration(limits.queueTimeoutMs)}, wake ${formatDuration(limits.wakeTimeoutMs)}`,
    `apps: ${appCount} in ${node.appsDir}; certs in ${node.certsDir}`,
    ...(node.acme === null ? [] : [`acme: ${node.acme.directoryUrl}, challenges ${node.acme.challenges.join(', ')}`]),
    ...describeStore(node.store),
  ];
}

/** The shared store, when there is one; says how it authenticates but never with what. */
function describeStore(store: StoreSettings): string[] {
  if (store.kind !== 'nats') return [];
  let auth = 'no auth';
  if (store.credsFile !== undefined) auth = `creds ${store.credsFile}`;
  else if (store.token !== undefined) auth = 'token set';
  else if (store.user !== undefined) auth = `user ${store.user} with password`;
  return [`store: nats ${store.servers.join(', ')}, prefix ${store.bucketPrefix}, replicas ${store.replicas}, ${auth}`];
}

export function describeApp(app: AppConfig): string[] {
  const lines = [`app ${app.name} (${app.file}): ${app.hostnames.join(', ')}; primary region ${app.primaryRegion}`];
  if (app.certificates.length > 0) {
    const names = app.certificates.map((c) => `${c.hostname} (${c.acme ? 'acme' : 'imported'})`);
    lines.push(`  certificates also for: ${names.join(', ')}`);
  }
  for (const service of app.services) {
    const { type, softLimit, hardLimit } = service.concurrency;
    const checks = service.checks.length === 0 ? 'no checks' : `checks ${service.checks.map((c) => c.name).join(', ')}`;
    lines.push(
      `  service ${service.index}: internal port ${service.internalPort}; ports ${describePorts(service.ports)}; ` +
        `${type} ${softLimit}/${hardLimit === Infinity ? 'unlimited' : hardLimit}; ` +
        `auto stop ${service.autoStopMachines}, auto start ${service.autoStartMachines ? 'on' : 'off'}; ${checks}`,
    );
  }
  for (const machine of app.machines) {
    const target = machine.driver === 'static' ? machine.address : machine.cmd?.join(' ');
    const owner = machine.node === null ? '' : `, node ${machine.node}`;
    lines.push(`  machine ${machine.id} (${machine.driver}, ${machine.region}${owner}): ${target}`);
  }
  return lines;
}

/** "80 [http], 443 [tls,http], 10000-10099 [tls]": a start_port..end_port range stays one entry. */
function describePorts(ports: readonly PortConfig[]): string {
  if (ports.length === 0) return 'none';
  const runs: { first: PortConfig; last: PortConfig }[] = [];
  for (const port of ports) {
    const run = runs[runs.length - 1];
    if (run !== undefined && run.last.source === port.source && run.last.port + 1 === port.port) run.last = port;
    else runs.push({ first: port, last: port });
  }
  return runs
    .map(({ first, last }) => `${first.port === last.port ? first.port : `${first.port}-${last.port}`} [${first.handlers.join(',')}]`)
    .join(', ');
}
