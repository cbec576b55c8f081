// `tsc --noEmit` as a test: Node 24 only strips types and never checks them, so without this a
// type error would reach main unnoticed. Covers everything tsconfig.json includes (src, test,
// bench, demo).
import t from 'tap';
import { execFile } from 'node:child_process';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..');

t.test('tsc --noEmit -p tsconfig.json reports no errors', async (t) => {
  const tsc = join(root, 'node_modules', '.bin', 'tsc');
  // tap (@tapjs/processinfo) patches child_process to put its loaders into every child's
  // NODE_OPTIONS, and those loaders break tsc's own ESM start-up (ERR_REQUIRE_CYCLE_MODULE).
  // Deleting NODE_OPTIONS from our env is undone by the patch, so `env -u` drops it in the child.
  const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
    const args = ['-u', 'NODE_OPTIONS', tsc, '--noEmit', '-p', 'tsconfig.json'];
    execFile('env', args, { cwd: root, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, output: `${stdout}${stderr}${err && code === null ? err.message : ''}` });
    });
  });
  t.equal(code, 0, 'tsc exits 0', { tscOutput: output });
});
