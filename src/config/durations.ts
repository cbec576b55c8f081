// Human-written durations and sizes, shared by the config loader and by anything that prints them
// back (check-config, admin status). Parsing returns undefined instead of throwing so the caller
// can report the error with the file, key path and line it knows about.

const DURATION_UNITS_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;
type DurationUnit = keyof typeof DURATION_UNITS_MS;

// One or more number+unit parts, as in Go: "10s", "500ms", "1.5s", "1m30s". "ms" is listed before
// "m" so that "500ms" is never read as 500 minutes followed by junk.
const DURATION = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/;
const DURATION_PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;

/** "10s" → 10000. A string without a unit is not a duration: bare numbers are the caller's call. */
export function parseDuration(text: string): number | undefined {
  if (!DURATION.test(text)) return undefined;
  let total = 0;
  for (const [, amount, unit] of text.matchAll(DURATION_PART)) {
    total += Number(amount) * DURATION_UNITS_MS[unit as DurationUnit];
  }
  return total;
}

/** 90000 → "1m30s", 1500 → "1.5s", 250 → "250ms": the shortest form parseDuration reads back. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms);
  if (ms < 1000 || !Number.isInteger(ms)) return `${ms}ms`;
  const parts: string[] = [];
  let rest = ms;
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000]] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  if (rest > 0) parts.push(`${rest / 1000}s`);
  return parts.join('');
}

const SIZE_UNITS = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, kB: 1000, KB: 1000, MB: 1000 ** 2, GB: 1000 ** 3 } as const;
type SizeUnit = keyof typeof SIZE_UNITS;
const SIZE = /^(\d+(?:\.\d+)?) ?(B|KiB|MiB|GiB|kB|KB|MB|GB)$/;

/** "16KiB" → 16384, "1.5MiB" → 1572864; undefined when malformed or not a whole number of bytes. */
export function parseSize(text: string): number | undefined {
  const match = SIZE.exec(text);
  if (match === null) return undefined;
  const bytes = Number(match[1]) * SIZE_UNITS[match[2] as SizeUnit];
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** 16384 → "16KiB", 1000 → "1000B": binary units only when exact. */
export function formatSize(bytes: number): string {
  for (const unit of ['GiB', 'MiB', 'KiB'] as const) {
    const size = SIZE_UNITS[unit];
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}B`;
}
