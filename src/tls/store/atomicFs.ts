// Crash-safe writes for the file certificate store.
//
// A pair (chain + key + meta) must never be seen half-written, nor as a new key next to the old
// chain, whatever instant the process or the machine dies at. Each pair therefore lives in its
// own generation directory `.<name>.g-<hex>`, written and fsynced in full, and the visible name
// `<name>` is a symlink to it, replaced by `symlink(tmp)` + `rename(tmp, name)`: rename(2) is
// atomic, so a reader (or readCertDir, which follows the link through stat) sees the old
// generation or the new one. The old generation is removed only after the swap is durable.
//
// A directory an operator made by hand cannot be the target of that rename (rename refuses to
// replace a directory by a symlink), so it is first moved aside to `.<name>.a-<hex>`; should we
// die before the new link is in place, recoverPairRoot() moves it back.
//
// Everything with a leading dot is ignored by readCertDir, and recoverPairRoot() (run when the
// store opens) removes what an interrupted write left: generations nothing links to, temporary
// links, set-aside and deleted directories.
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, readlink, rename, rm, symlink, unlink } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';

/** Points of a write where a crash test can stop the process (FileCertStore `onStep`). */
export type WriteStep =
  | 'pair-key-written'
  | 'pair-generation-complete'
  | 'pair-moved-aside'
  | 'pair-swapped'
  | 'json-tmp-written';
export type StepHook = (step: WriteStep, path: string) => void;

export interface PairFile {
  readonly name: string;
  readonly data: string;
  readonly mode: number;
}

// `<name>` may itself contain dots (host names), hence the greedy group and the fixed suffix.
const LEFTOVER = /^\.(.+)\.(g|a|l|d)-([0-9a-f]{16})$/;
const JSON_TMP = /^\..+\.[0-9a-f]{16}\.tmp$/;
const hex = (): string => randomBytes(8).toString('hex');

const isMissing = (err: unknown): boolean => (err as NodeJS.ErrnoException).code === 'ENOENT';

/** Write a new file (never an existing one) and fsync it. */
export async function writeDurable(file: string, data: string, mode: number): Promise<void> {
  const fh = await open(file, 'wx', mode);
  try {
    await fh.writeFile(data, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Makes the directory's entries (a create, rename or unlink) durable (fsync(2) on Linux). */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Replace `file` with `data` atomically and durably: temp file, fsync, rename, fsync the dir. */
export async function writeFileAtomic(file: string, data: string, mode: number, onStep?: StepHook): Promise<void> {
  const dir = join(file, '..');
  const tmp = join(dir, `.${basename(file)}.${hex()}.tmp`);
  try {
    await writeDurable(tmp, data, mode);
    onStep?.('json-tmp-written', tmp);
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await syncDir(dir);
}

/** Where `<root>/<name>` leads, or null when there is nothing (or a plain file) there. */
export async function resolvePairDir(root: string, name: string): Promise<string | null> {
  const path = join(root, name);
  let st;
  try {
    st = await lstat(path);
  } catch (err) {
    if (isMissing(err)) return null;
    throw err;
  }
  // Resolved once, so that both files of the pair come from the same generation.
  if (st.isSymbolicLink()) return resolve(root, await readlink(path));
  return st.isDirectory() ? path : null;
}

/** The generation `<root>/<name>` links to when it is one of ours, else null. */
async function ownGeneration(root: string, name: string): Promise<string | null> {
  let target: string;
  try {
    target = await readlink(join(root, name));
  } catch {
    return null; // missing, or a real directory
  }
  const m = LEFTOVER.exec(target);
  return m !== null && m[1] === name && m[2] === 'g' ? target : null;
}

/**
 * Make `<root>/<name>` hold exactly `files`, atomically. `root` must exist. An operator's
 * symlink at `<name>` is replaced, its target left alone.
 */
export async function swapPairDir(root: string, name: string, files: readonly PairFile[], onStep?: StepHook): Promise<void> {
  const gen = `.${name}.g-${hex()}`;
  const genPath = join(root, gen);
  const path = join(root, name);
  await mkdir(genPath, { mode: 0o700 });
  try {
    for (const f of files) {
      await writeDurable(join(genPath, f.name), f.data, f.mode);
      if (f.name === 'key.pem') onStep?.('pair-key-written', genPath);
    }
    await syncDir(genPath);
    await syncDir(root); // the generation's own entry, before anything points at it
  } catch (err) {
    await rm(genPath, { recursive: true, force: true });
    throw err;
  }
  onStep?.('pair-generation-complete', genPath);

  const oldGen = await ownGeneration(root, name);
  let aside: string | null = null;
  const st = await lstat(path).catch((err: unknown) => {
    if (isMissing(err)) return null;
    throw err;
  });
  if (st !== null && !st.isSymbolicLink()) {
    if (!st.isDirectory()) {
      await rm(genPath, { recursive: true, force: true });
      throw new Error(`${path} exists and is not a directory; not replaced`);
    }
    aside = join(root, `.${name}.a-${hex()}`);
    await rename(path, aside);
    onStep?.('pair-moved-aside', aside);
  }
  const tmpLink = join(root, `.${name}.l-${hex()}`);
  try {
    await symlink(gen, tmpLink);
    await rename(tmpLink, path);
  } catch (err) {
    // Not a crash: put things back now rather than leave the name empty until the next open.
    await unlink(tmpLink).catch(() => {});
    if (aside !== null) await rename(aside, path).catch(() => {});
    await rm(genPath, { recursive: true, force: true });
    throw err;
  }
  await syncDir(root);
  onStep?.('pair-swapped', path);

  // The swap is durable: what follows is tidying, which recoverPairRoot() redoes if we stop.
  if (oldGen !== null) await rm(join(root, oldGen), { recursive: true, force: true });
  if (aside !== null) await rm(aside, { recursive: true, force: true });
}

/**
 * Remove `<root>/<name>`; true when there was a directory (or a link to one). The visible name
 * goes first, in one step; the files go after.
 */
export async function removePairDir(root: string, name: string): Promise<boolean> {
  const path = join(root, name);
  const st = await lstat(path).catch((err: unknown) => {
    if (isMissing(err)) return null;
    throw err;
  });
  if (st === null) return false;
  if (st.isSymbolicLink()) {
    const gen = await ownGeneration(root, name);
    await unlink(path);
    await syncDir(root);
    if (gen !== null) await rm(join(root, gen), { recursive: true, force: true });
    return true;
  }
  if (!st.isDirectory()) return false;
  const doomed = join(root, `.${name}.d-${hex()}`);
  await rename(path, doomed);
  await syncDir(root);
  await rm(doomed, { recursive: true, force: true });
  return true;
}

/**
 * Undo or finish what an interrupted swapPairDir/removePairDir/writeFileAtomic left in `root`:
 * a set-aside directory whose name is free goes back; every other leftover is removed. Returns
 * one line per repair, for the log. Run before the store serves anything.
 */
export async function recoverPairRoot(root: string): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir(root);
  } catch (err) {
    if (isMissing(err)) return [];
    throw err;
  }
  const repairs: string[] = [];
  const byName = new Map<string, { kind: string; entry: string }[]>();
  for (const entry of entries) {
    if (JSON_TMP.test(entry)) {
      await rm(join(root, entry), { force: true });
      repairs.push(`removed ${join(root, entry)} (an unfinished write)`);
      continue;
    }
    const m = LEFTOVER.exec(entry);
    if (m === null) continue;
    const list = byName.get(m[1]!) ?? [];
    list.push({ kind: m[2]!, entry });
    byName.set(m[1]!, list);
  }
  for (const [name, leftovers] of byName) {
    const path = join(root, name);
    const present = (await lstat(path).catch(() => null)) !== null;
    const aside = leftovers.find((l) => l.kind === 'a');
    if (!present && aside !== undefined) {
      await rename(join(root, aside.entry), path);
      repairs.push(`restored ${path} from ${aside.entry} (a replacement was interrupted before it took effect)`);
    }
    const live = await ownGeneration(root, name);
    for (const l of leftovers) {
      if (l.entry === live || (!present && l === aside)) continue;
      await rm(join(root, l.entry), { recursive: true, force: true });
      repairs.push(`removed ${join(root, l.entry)} (left by an interrupted write)`);
    }
  }
  if (repairs.length > 0) await syncDir(root);
  return repairs;
}
