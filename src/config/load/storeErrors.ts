// resolveNatsConfig's refusals (StoreError 'invalid', "store.<field> <reason>" or "store: <rule>")
// re-thrown as ConfigErrors at the `[store]` key they are about, in the words a config uses.

import { NATS_DEFAULTS } from '../../store/config.ts';
import type { StoreError } from '../../store/errors.ts';
import { formatDuration } from '../durations.ts';
import type { NatsSettings } from './store.ts';
import type { Section } from './section.ts';
import { NATS_FIELDS } from './storeKeys.ts';

/** Which key a secret came from: `token` or `token_env`, `pass` or `pass_env`. */
export interface WrittenKeys {
  token?: string;
  pass?: string;
}

/** Why a rule holds, for the refusals whose message only states it. */
const WHY: Readonly<Record<string, string>> = {
  replicas: 'a replicated bucket needs a majority of its replicas to agree, so an even count adds a server without surviving one more failure',
  bucket_prefix: 'it names the buckets (<prefix>_<collection>) and subjects (<prefix>.<subject>) of this cluster',
};

export function failAtStoreKey(s: Section, error: StoreError, settings: NatsSettings, written: WrittenKeys): never {
  const field = /^store\.(\w+) ([^]*)$/.exec(error.message);
  if (field !== null) {
    const key = NATS_FIELDS[field[1]!] ?? field[1]!;
    const reason = inTomlWords(field[2]!);
    if (!s.has(key)) return failAtPartner(s, field[1]!, key, reason);
    const shown = key === 'bucket_prefix' || key === 'replicas' ? `, got ${JSON.stringify(key === 'replicas' ? settings.replicas : settings.bucketPrefix)}` : '';
    const why = WHY[key] === undefined ? '' : ` (${WHY[key]})`;
    return s.fail(key, `${reason}${shown}${why}`);
  }
  const rule = /^store: ([^]*)$/.exec(error.message)?.[1] ?? error.message;
  if (/token/.test(rule) && /user/.test(rule)) {
    // Report the later of the two: the earlier one was fine until the other came along.
    const token = written.token ?? 'token';
    const [first, second] = [token, 'user'].sort((a, b) => s.lineOf(s.at(a)) - s.lineOf(s.at(b)));
    return s.fail(second!, `${rule} (${first} is on line ${s.lineOf(s.at(first!))}): keep one, a server authenticates a client one way`);
  }
  if (/user/.test(rule) && /pass/.test(rule)) {
    if (settings.user !== undefined) return s.fail('user', `${rule}: user is set, so set pass or pass_env too`);
    return s.fail(written.pass ?? 'pass', `${rule}: ${written.pass ?? 'pass'} is set without user`);
  }
  return s.failHere(inTomlWords(rule));
}

/**
 * A rule between two keys broken by a default ("reconnect_max must be >= reconnect_min" with only
 * reconnect_min set): the error goes to the key the file does set, and says what the default is.
 */
function failAtPartner(s: Section, field: string, key: string, reason: string): never {
  const partner = Object.values(NATS_FIELDS).find((other) => other !== key && reason.includes(other) && s.has(other));
  if (partner === undefined) return s.fail(key, reason);
  const fallback = (NATS_DEFAULTS as Readonly<Record<string, number | string>>)[field];
  if (fallback === undefined) return s.fail(partner, `${key} ${reason}`);
  const shown = typeof fallback === 'number' && field.endsWith('Ms') ? formatDuration(fallback) : JSON.stringify(fallback);
  return s.fail(partner, `${key} (${shown}, the default) ${reason}`);
}

/** "must be >= reconnectMinMs" → "must be >= reconnect_min". */
function inTomlWords(reason: string): string {
  return reason.replace(/\b[a-z]+[A-Z]\w*\b/g, (word) => NATS_FIELDS[word] ?? word);
}
