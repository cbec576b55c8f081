// Debian packages that integration tests drive as real programs (lab.md: the only fakes are real
// local servers). test/setup/deps.ts installs the missing ones before `npm test` when it can
// (ensureDebianPackages, also used by the bench for its load tools); a suite calls
// requireBinary() so that, when one is still missing (not root, no network), it skips with a
// message that says how to get it instead of failing.

import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** A program a test runs and the Debian package that ships it. */
export interface Dep {
  readonly binary: string;
  readonly pkg: string;
}

// Later issues add wireguard-go (wireguard-go), wg (wireguard-tools), bird (bird2), ip (iproute2)
// here as their suites appear.
// nginx is only a bench contender, not a test dependency, so it is not installed here.
export const TEST_DEPS: readonly Dep[] = [
  { binary: 'prometheus', pkg: 'prometheus' }, // real scraper of the admin /metrics
  { binary: 'wrk', pkg: 'wrk' }, // load for the reload-under-load and SIGTERM-under-load tests
  { binary: 'curl', pkg: 'curl' },
  { binary: 'h2load', pkg: 'nghttp2-client' },
  { binary: 'pebble', pkg: 'pebble' }, // real ACME CA (with pebble-challtestsrv for fake DNS)
  { binary: 'pebble-challtestsrv', pkg: 'pebble' },
  { binary: 'nats-server', pkg: 'nats-server' }, // the cluster store
];

// npm runs scripts with a PATH that may lack the sbin directories (bird, ip live there).
const EXTRA_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/** Absolute path of an executable named `binary` on PATH (or in sbin), like `command -v`. */
export function findBinary(binary: string): string | null {
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(Boolean).concat(EXTRA_DIRS);
  for (const dir of dirs) {
    const file = join(dir, binary);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here: keep looking
    }
  }
  return null;
}

export function missingMessage(pkg: string): string {
  return `needs Debian package ${pkg} (run npm test as root to install it)`;
}

/** The parts of a tap Test that requireBinary uses (kept structural so any tap version fits). */
interface Skippable {
  plan(n: number, comment?: string): void;
}

/**
 * Path of `binary`, or null after marking `t` as skipped with the package to install.
 * Call it first thing in a test (or at the top of a file) and return when it gives null:
 * `const prom = requireBinary(t, 'prometheus', 'prometheus'); if (!prom) return;`
 */
export function requireBinary(t: Skippable, binary: string, pkg: string): string | null {
  const path = findBinary(binary);
  if (path === null) t.plan(0, missingMessage(pkg));
  return path;
}

/** Runs apt-get with its output on our console; returns a reason on failure, null on success. */
function aptGet(args: string[], timeoutMs: number): string | null {
  const res = spawnSync('apt-get', args, {
    stdio: ['ignore', 'inherit', 'inherit'],
    timeout: timeoutMs,
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  if (res.error) return res.error.message;
  if (res.signal) return `killed by ${res.signal}${res.signal === 'SIGTERM' ? ' (timeout)' : ''}`;
  if (res.status !== 0) return `exit status ${res.status}`;
  return null;
}

/**
 * Makes sure every dep's binary is present: nothing to do (no apt call, a PATH lookup each) when
 * they are; as root, one `apt-get update` and one `apt-get install` of the missing packages;
 * otherwise says what is missing. Never throws for a failed install: it reports it, and returns
 * the deps that are still missing so the caller can skip what needs them.
 */
export function ensureDebianPackages(deps: readonly Dep[], log: (line: string) => void): Dep[] {
  const missing = (): Dep[] => deps.filter((d) => findBinary(d.binary) === null);
  const before = missing();
  if (before.length === 0) return [];
  const pkgs = [...new Set(before.map((d) => d.pkg))];
  const names = before.map((d) => `${d.binary} (${d.pkg})`).join(', ');

  if (process.getuid?.() !== 0) {
    log(`missing ${names}; not root, so not installing them.`);
    log(`to install them: sudo apt-get install -y --no-install-recommends ${pkgs.join(' ')}`);
    return before;
  }
  if (findBinary('apt-get') === null) {
    log(`missing ${names} and there is no apt-get here.`);
    return before;
  }

  // Several `npm test` runs may start at once on a shared machine: wait for the dpkg lock
  // instead of failing on it.
  const common = ['-q', '-o', 'DPkg::Lock::Timeout=300'];
  log(`missing ${names}: installing ${pkgs.join(' ')} (apt-get update, then install)`);
  const t0 = Date.now();
  const updateErr = aptGet([...common, 'update'], 300_000);
  if (updateErr) log(`apt-get update failed (${updateErr}); trying the install with the current lists`);
  const installErr = aptGet([...common, 'install', '-y', '--no-install-recommends', ...pkgs], 600_000);
  if (installErr) log(`apt-get install failed (${installErr})`);

  const after = missing();
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  if (after.length === 0) log(`installed ${pkgs.join(' ')} in ${secs} s`);
  else log(`still missing ${after.map((d) => d.binary).join(', ')} after ${secs} s`);
  return after;
}
