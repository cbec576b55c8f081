// Runs before every `npm test` (package.json "pretest"): makes sure the Debian packages that the
// integration suites drive (test/helpers/deps.ts TEST_DEPS) are installed, so that a fresh clone
// or a fresh CI machine runs every suite with `npm test` alone. Fast when all are present (a
// PATH lookup each, no apt call); as root it installs what is missing; otherwise it says what is
// missing. It never fails the test run: suites whose package is missing skip (requireBinary).

import { TEST_DEPS, ensureDebianPackages } from '../helpers/deps.ts';

const log = (line: string): void => {
  process.stdout.write(`deps: ${line}\n`);
};

try {
  const missing = ensureDebianPackages(TEST_DEPS, log);
  if (missing.length > 0) log(`suites that need ${missing.map((d) => d.binary).join(', ')} will skip.`);
} catch (err) {
  log(`dependency check failed: ${(err as Error).message}; continuing, affected suites will skip.`);
}
