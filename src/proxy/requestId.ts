// Fly-Request-Id values: `<ULID>-<region>`. ULIDs sort by time (useful when grepping logs) and
// need no coordination. Randomness comes from a pooled crypto buffer refilled in bulk, so a
// request costs no syscall.

import { randomFillSync } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'; // Crockford base32
const POOL_SIZE = 16 * 1024;
const pool = Buffer.allocUnsafe(POOL_SIZE);
let poolPos = POOL_SIZE;

function encodeTime(ms: number): string {
  let out = '';
  for (let i = 9; i >= 0; i--) {
    const mod = ms % 32;
    out = ALPHABET[mod]! + out;
    ms = (ms - mod) / 32;
  }
  return out;
}

let lastMs = -1;
let lastTime = '';

export function ulid(now: number = Date.now()): string {
  if (now !== lastMs) {
    lastMs = now;
    lastTime = encodeTime(now);
  }
  if (poolPos + 16 > POOL_SIZE) {
    randomFillSync(pool);
    poolPos = 0;
  }
  // 16 random symbols = 80 bits, one byte's low 5 bits per symbol.
  let rand = '';
  for (let i = 0; i < 16; i++) rand += ALPHABET[pool[poolPos++]! & 31];
  return lastTime + rand;
}

export function requestId(region: string): string {
  return `${ulid()}-${region}`;
}
