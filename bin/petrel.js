#!/usr/bin/env node
// Thin launcher: petrel's sources are TypeScript run directly by Node 24 (type stripping).
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(`petrel needs Node.js 24 or newer (this is ${process.version}); run it through npm (npm start) or the Docker image\n`);
  process.exit(1);
}
await import('../src/main.ts');
