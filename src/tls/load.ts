// Control plane: turn the certs directory and the config into a cert table, at start and on
// every reload. Problems with single certificates are logged and skipped, never fatal.
import type { Config } from '../config/types.ts';
import { buildCertTable, readCertDir, type CertSource, type CertTableBuild, type CertWarning } from './certTable.ts';
import { createSelfSigned, ensureSelfSigned, type KeyPairPem } from './selfsigned.ts';

export interface CertLoad extends CertTableBuild {
  /** true when a new self-signed pair was made on this load. */
  readonly selfSignedGenerated: boolean;
}

/**
 * Read `<certsDir>/<name>/` pairs and, when `selfSignedHostnames` is not null, make or reuse the
 * self-signed default. A certs dir we cannot write to (read-only container) still gets a
 * self-signed default, kept in memory only.
 */
export async function loadCertTable(
  certsDir: string,
  selfSignedHostnames: readonly string[] | null,
  extra: readonly CertSource[] = [],
  now: Date = new Date(),
): Promise<CertLoad> {
  const warnings: CertWarning[] = [];
  let selfSigned: KeyPairPem | null = null;
  let generated = false;
  if (selfSignedHostnames !== null) {
    try {
      const s = await ensureSelfSigned(certsDir, selfSignedHostnames, now);
      selfSigned = s;
      generated = s.generated;
    } catch (err) {
      selfSigned = createSelfSigned(selfSignedHostnames, now);
      generated = true;
      warnings.push({ label: '_self-signed', message: `cannot persist the self-signed pair, using one in memory: ${(err as Error).message}` });
    }
  }
  const dir = await readCertDir(certsDir);
  const built = buildCertTable([...dir.sources, ...extra], selfSigned, now.getTime());
  return { table: built.table, warnings: [...warnings, ...dir.warnings, ...built.warnings], selfSignedGenerated: generated };
}

/**
 * Names the self-signed default covers, or null when no port asks for it. Wildcards are kept,
 * but clients do not honour `*.localhost` (Node, curl and browsers refuse a wildcard over a
 * single label), which is why every app's own name is listed too.
 */
export function selfSignedHostnames(config: Config): string[] | null {
  let wanted = false;
  const names = new Set<string>(['localhost', config.node.defaultDomain, `*.${config.node.defaultDomain}`]);
  for (const app of config.apps.values()) {
    for (const h of app.hostnames) names.add(h);
    for (const svc of app.services) for (const p of svc.ports) if (p.tls.defaultSelfSigned) wanted = true;
  }
  return wanted ? [...names] : null;
}
