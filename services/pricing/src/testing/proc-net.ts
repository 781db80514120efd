// Listening TCP sockets of this network namespace, from /proc/net/tcp and /proc/net/tcp6: the
// kernel's own view, so "bound to 127.0.0.1 only" can be checked (connecting to 127.0.0.2 cannot
// tell, since all of 127/8 is loopback).
import * as fs from 'node:fs';

const LISTEN = '0A';

function ipv4(hex: string): string {
  // little-endian 32-bit word
  return [6, 4, 2, 0].map((i) => parseInt(hex.slice(i, i + 2), 16)).join('.');
}

function ipv6(hex: string): string {
  // four little-endian 32-bit words
  const bytes: number[] = [];
  for (let w = 0; w < 4; w++) {
    const word = hex.slice(w * 8, w * 8 + 8);
    for (const i of [6, 4, 2, 0]) bytes.push(parseInt(word.slice(i, i + 2), 16));
  }
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return groups.join(':'); // not compressed; '0:0:0:0:0:0:0:0' is ::
}

export interface ListeningSocket {
  family: 4 | 6;
  address: string;
  port: number;
}

export function listeningSockets(port: number): ListeningSocket[] {
  const out: ListeningSocket[] = [];
  for (const [file, family] of [
    ['/proc/net/tcp', 4],
    ['/proc/net/tcp6', 6],
  ] as const) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue; // no IPv6 in this kernel
    }
    for (const line of text.trim().split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      const [addrHex, portHex] = cols[1].split(':');
      if (cols[3] !== LISTEN || parseInt(portHex, 16) !== port) continue;
      out.push({ family, address: family === 4 ? ipv4(addrHex) : ipv6(addrHex), port });
    }
  }
  return out;
}
