// PROXY protocol header sent to a Machine before the stream (`proxy_proto` handler), so the app
// sees the real client address. Spec: haproxy.org PROXY protocol v1 (text) and v2 (binary).

import { isIPv4, isIPv6 } from 'node:net';
import { peerAddress } from './host.ts';

export function proxyHeaderV1(srcIp: string, srcPort: number, dstIp: string, dstPort: number): Buffer {
  const src = peerAddress(srcIp);
  const dst = peerAddress(dstIp);
  const v4 = isIPv4(src) && isIPv4(dst);
  const v6 = !v4 && isIPv6(src) && isIPv6(dst);
  if (!v4 && !v6) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
  return Buffer.from(`PROXY ${v4 ? 'TCP4' : 'TCP6'} ${src} ${dst} ${srcPort} ${dstPort}\r\n`, 'latin1');
}

const V2_SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

export function proxyHeaderV2(srcIp: string, srcPort: number, dstIp: string, dstPort: number): Buffer {
  const src = peerAddress(srcIp);
  const dst = peerAddress(dstIp);
  if (isIPv4(src) && isIPv4(dst)) {
    const b = Buffer.alloc(16 + 12);
    V2_SIG.copy(b, 0);
    b[12] = 0x21; // version 2, PROXY command
    b[13] = 0x11; // AF_INET, STREAM
    b.writeUInt16BE(12, 14);
    writeV4(b, 16, src);
    writeV4(b, 20, dst);
    b.writeUInt16BE(srcPort, 24);
    b.writeUInt16BE(dstPort, 26);
    return b;
  }
  if (isIPv6(src) && isIPv6(dst)) {
    const b = Buffer.alloc(16 + 36);
    V2_SIG.copy(b, 0);
    b[12] = 0x21;
    b[13] = 0x21; // AF_INET6, STREAM
    b.writeUInt16BE(36, 14);
    writeV6(b, 16, src);
    writeV6(b, 32, dst);
    b.writeUInt16BE(srcPort, 48);
    b.writeUInt16BE(dstPort, 50);
    return b;
  }
  // Mixed families cannot be expressed: LOCAL command, no address block (the receiver then uses
  // the connection's own addresses), as the v2 spec prescribes.
  const b = Buffer.alloc(16);
  V2_SIG.copy(b, 0);
  b[12] = 0x20;
  b[13] = 0x00;
  return b;
}

function writeV4(b: Buffer, off: number, ip: string): void {
  const parts = ip.split('.');
  for (let i = 0; i < 4; i++) b[off + i] = Number(parts[i]);
}

function writeV6(b: Buffer, off: number, ip: string): void {
  // Expand `::` and an embedded dotted IPv4 tail into 8 groups.
  let s = ip;
  const zone = s.indexOf('%');
  if (zone !== -1) s = s.slice(0, zone);
  const lastColon = s.lastIndexOf(':');
  const tail = s.slice(lastColon + 1);
  if (tail.includes('.')) {
    const p = tail.split('.').map(Number);
    s = `${s.slice(0, lastColon + 1)}${((p[0]! << 8) | p[1]!).toString(16)}:${((p[2]! << 8) | p[3]!).toString(16)}`;
  }
  const [head, rest] = s.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const r = rest !== undefined && rest !== '' ? rest.split(':') : [];
  const groups = rest === undefined ? h : [...h, ...new Array<string>(8 - h.length - r.length).fill('0'), ...r];
  for (let i = 0; i < 8; i++) b.writeUInt16BE(parseInt(groups[i] ?? '0', 16), off + i * 2);
}
