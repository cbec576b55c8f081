// Freezing: a loaded config is shared by every snapshot built from it, so nothing may change it.

/** A Map whose mutators throw: Object.freeze alone does not stop Map.set. */
export function frozenMap<K, V>(entries: Iterable<readonly [K, V]>): ReadonlyMap<K, V> {
  const map = new Map<K, V>(entries);
  const refuse = (): never => {
    throw new TypeError('configuration is read-only');
  };
  Object.defineProperties(map, { set: { value: refuse }, delete: { value: refuse }, clear: { value: refuse } });
  return Object.freeze(map);
}

export function deepFreeze<T>(value: T): T {
  if (typeof value !== 'object' || value === null) return value;
  const children = value instanceof Map ? value.values() : Object.values(value);
  for (const child of children) deepFreeze(child);
  return Object.freeze(value);
}
