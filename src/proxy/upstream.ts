// A keep-alive HTTP/1.1 connection to one Machine address, and the pools that keep them. The
// socket's handlers are bound once per connection and hand every event to the current owner
// (the client connection whose request is in flight); an idle pooled connection has no owner.

import type net from 'node:net';
import { E } from './errors.ts';
import { ChunkedScanner, ResponseHeadParser } from './http1/index.ts';
import { AddressPool, Pools, type Pooled } from './pool.ts';

/** What an Upstream reports to: the client side of the exchange using it. */
export interface UpstreamOwner {
  readonly socket: net.Socket;
  onUpstreamData(chunk: Buffer): void;
  onUpstreamDrain(): void;
  onUpstreamEnd(): void;
  onUpstreamClose(err: NodeJS.ErrnoException | null): void;
}

export const upstreamPools = new Pools<Upstream>();

/** A keep-alive connection to one Machine address. */
export class Upstream implements Pooled {
  readonly socket: net.Socket;
  readonly pool: AddressPool<Upstream>;
  reusable: boolean;
  idleSince: number;
  owner: UpstreamOwner | null;
  readonly parser: ResponseHeadParser;
  readonly chunked: ChunkedScanner;
  /** Requests sent on this connection (1 = fresh): a failure on a reused one may be retried. */
  uses: number;

  constructor(socket: net.Socket, pool: AddressPool<Upstream>, maxHeaderBytes: number, maxHeaderCount: number) {
    this.socket = socket;
    this.pool = pool;
    this.reusable = true;
    this.idleSince = 0;
    this.owner = null;
    this.parser = new ResponseHeadParser(maxHeaderBytes, maxHeaderCount);
    this.chunked = new ChunkedScanner(E.BAD_RESPONSE);
    this.uses = 0;
    socket.on('data', this.onData);
    socket.on('drain', this.onDrain);
    socket.on('close', this.onClose);
    socket.on('error', this.onError);
    socket.on('end', this.onEnd);
  }

  private readonly onData = (chunk: Buffer): void => {
    const o = this.owner;
    if (o === null) {
      // Bytes on an idle connection: the app is out of sync with us; never reuse it.
      this.reusable = false;
      this.socket.destroy();
      return;
    }
    // Head and body of a small response usually arrive together: one writev to the client.
    const client = o.socket;
    client.cork();
    o.onUpstreamData(chunk);
    client.uncork();
  };
  private readonly onDrain = (): void => {
    this.owner?.onUpstreamDrain();
  };
  private readonly onEnd = (): void => {
    this.reusable = false;
    if (this.owner !== null) this.owner.onUpstreamEnd();
    else this.socket.destroy();
  };
  private readonly onClose = (): void => {
    this.reusable = false;
    this.owner?.onUpstreamClose(null);
  };
  private readonly onError = (err: NodeJS.ErrnoException): void => {
    this.reusable = false;
    this.owner?.onUpstreamClose(err);
  };
}

