// `[cluster]` of the node config → ClusterSettings: the timing of the nodes that share a store.
//
// The keys are read with every store kind, so a node config can be prepared before it switches
// to `[store] kind = "nats"`; with the embedded store nothing uses them.

import { formatDuration } from '../durations.ts';
import type { ClusterSettings } from '../types.ts';
import type { Section } from './section.ts';

/** The documented defaults (config/examples/node-reference.toml). */
export const CLUSTER_DEFAULTS: ClusterSettings = Object.freeze({
  heartbeatIntervalMs: 1000,
  nodeDeadAfterMs: 5000,
  loadPublishIntervalMs: 200,
  applyDebounceMs: 50,
  ownerRequestTimeoutMs: 30_000,
});

/**
 * A node is declared dead only after missing this many heartbeats in a row: with less, a live node
 * whose heartbeat is merely due (or a write that took a moment) would look dead between two beats,
 * and its Machines would lose their traffic for nothing.
 */
const MIN_HEARTBEATS_PER_DEATH = 2;

export function readCluster(s: Section): ClusterSettings {
  const heartbeat = s.durationMs('heartbeat_interval', 'ms');
  const deadAfter = s.durationMs('node_dead_after', 'ms');
  const settings: ClusterSettings = {
    heartbeatIntervalMs: heartbeat ?? CLUSTER_DEFAULTS.heartbeatIntervalMs,
    nodeDeadAfterMs: deadAfter ?? CLUSTER_DEFAULTS.nodeDeadAfterMs,
    loadPublishIntervalMs: s.durationMs('load_publish_interval', 'ms') ?? CLUSTER_DEFAULTS.loadPublishIntervalMs,
    // 0: every store change becomes a snapshot of its own (no batching).
    applyDebounceMs: s.durationMs('apply_debounce', 'ms', true) ?? CLUSTER_DEFAULTS.applyDebounceMs,
    ownerRequestTimeoutMs: s.durationMs('owner_request_timeout', 'ms') ?? CLUSTER_DEFAULTS.ownerRequestTimeoutMs,
  };
  s.finish();
  checkDeadAfter(s, settings, deadAfter !== undefined);
  return settings;
}

/** node_dead_after against heartbeat_interval; the error names the key the file actually sets. */
function checkDeadAfter(s: Section, settings: ClusterSettings, deadAfterWritten: boolean): void {
  const { heartbeatIntervalMs: beat, nodeDeadAfterMs: dead } = settings;
  const least = beat * MIN_HEARTBEATS_PER_DEATH;
  if (dead >= least) return;
  const why =
    `node_dead_after (${formatDuration(dead)}${deadAfterWritten ? '' : ', the default'}) must be at least ` +
    `${MIN_HEARTBEATS_PER_DEATH} x heartbeat_interval (${formatDuration(beat)}), i.e. ${formatDuration(least)}: ` +
    'with less, a live node would look dead between two heartbeats';
  s.fail(deadAfterWritten ? 'node_dead_after' : 'heartbeat_interval', why);
}
