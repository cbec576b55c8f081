// Free loopback ports for `process` Machines.
//
// We bind 127.0.0.1:0, read the port the kernel picked and close the socket again, then hand the
// number to the child in PORT. Between our close() and the child's bind() another process could
// take the same port. The window is a few milliseconds and Linux hands out ephemeral ports
// pseudo-randomly across a ~28k range, so a clash is rare; when it does happen the child fails to
// bind, exits, and the Machine goes to `failed` with the exit in lastError (visible, not silent).
// The alternative (passing a listening fd to the child) would force every app to accept an fd
// instead of a PORT, which Fly apps do not do.

import { createServer } from 'node:net';

export function allocatePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ host, port: 0, exclusive: true }, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error(`could not allocate a port on ${host}`))));
    });
  });
}

/** Parses "host:port" or "[v6]:port" (the static driver's `address`). */
export function parseAddress(address: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(address.trim());
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || !(port > 0 && port < 65536)) {
    throw new Error(`invalid address ${JSON.stringify(address)}: expected "host:port"`);
  }
  return { host: (m[1] ?? m[2])!, port };
}
