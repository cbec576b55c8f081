// One pino root logger per process, component children made once at start-up. JSON lines on
// stdout, written asynchronously (sonic-boom) so logging never blocks the event loop on a slow
// consumer; flushed synchronously at exit so the last lines (shutdown) are not lost.

import pino from 'pino';
import type { LogLevel } from '../config/types.ts';

export type Logger = pino.Logger;

export interface Loggers {
  readonly root: Logger;
  readonly access: Logger;
  readonly proxy: Logger;
  readonly config: Logger;
  readonly machines: Logger;
  readonly admin: Logger;
  readonly tls: Logger;
  readonly cluster: Logger;
  flush(): void;
}

export function makeLoggers(level: LogLevel, destination?: pino.DestinationStream): Loggers {
  const dest = destination ?? pino.destination({ dest: 1, sync: false, minLength: 4096 });
  // Batched writes are cheap under load; on a quiet node the timer bounds how long a line waits
  // (start-up, reload and error lines must show up promptly, and survive a crash soon after).
  if (destination === undefined) {
    // sonic-boom's buffered length (`_len`) is not public API; without it, flush unconditionally.
    const boom = dest as unknown as { flush(): void; _len?: number };
    const flusher = setInterval(() => {
      if (boom._len === undefined || boom._len > 0) boom.flush();
    }, 250);
    flusher.unref();
  }
  const root = pino(
    {
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    dest,
  );
  return {
    root,
    // The access log is always on at info, whatever the component level, unless silenced.
    access: root.child({ c: 'access' }, { level: level === 'silent' ? 'silent' : 'info' }),
    proxy: root.child({ c: 'proxy' }),
    config: root.child({ c: 'config' }),
    machines: root.child({ c: 'machines' }),
    admin: root.child({ c: 'admin' }),
    tls: root.child({ c: 'tls' }),
    cluster: root.child({ c: 'cluster' }),
    flush() {
      const d = dest as { flushSync?: () => void };
      try {
        d.flushSync?.();
      } catch {
        // sonic-boom throws if it is not ready yet (nothing written): nothing to flush.
      }
    },
  };
}

export function setLevel(l: Loggers, level: LogLevel): void {
  l.root.level = level;
  for (const child of [l.proxy, l.config, l.machines, l.admin, l.tls, l.cluster]) child.level = level;
  l.access.level = level === 'silent' ? 'silent' : 'info';
}
