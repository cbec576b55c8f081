// Assertions the config suites share: a ConfigError must name file, key path and line, with a
// reason a human can act on; temp trees of config files for the loaders that read directories.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { ConfigError } from '../../src/config/types.ts';

/** Where the in-memory parses of the config suites pretend their files are. */
export const NODE_FILE = '/srv/petrel/petrel.toml';
export const APP_FILE = '/srv/petrel/apps/app.toml';

export interface Wanted {
  /** Defaults to APP_FILE. */
  file?: string;
  key: string;
  line: number;
  reason: RegExp;
}

/** The call throws a ConfigError naming file, key path and line, with a matching reason. */
export function throwsConfig(t: Test, fn: () => unknown, wanted: Wanted): void {
  try {
    fn();
    t.fail(`expected a ConfigError at ${wanted.key}`);
  } catch (error) {
    checkError(t, error, wanted);
  }
}

export async function rejectsConfig(t: Test, promise: Promise<unknown>, wanted: Wanted): Promise<void> {
  try {
    await promise;
    t.fail(`expected a ConfigError at ${wanted.key}`);
  } catch (error) {
    checkError(t, error, wanted);
  }
}

export function checkError(t: Test, error: unknown, wanted: Wanted): void {
  if (!(error instanceof ConfigError)) throw error;
  t.same(
    { file: error.file, key: error.key, line: error.line },
    { file: wanted.file ?? APP_FILE, key: wanted.key, line: wanted.line },
    `${wanted.key}: ${error.message}`,
  );
  t.match(error.message, wanted.reason);
}

/** Writes files under a fresh temp dir (removed at teardown) and returns its path. */
export function tree(t: Test, files: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'petrel-config-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), text);
  }
  return dir;
}
