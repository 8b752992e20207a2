// Address blocks for cluster-wide IPAM without a round trip per container
// (as Calico's affine blocks and flannel's per-host subnets): each host leases
// whole blocks of a cluster network's dynamic range from etcd, then hands out their
// addresses locally. Pure maths here; leasing lives in cluster/registry.ts.
import { contains, formatIp, formatPrefix, lastAddress, parsePrefix, subnets, width, type Prefix } from './cidr.js';

/** Block prefix length for a range: /26-ish blocks, smaller in small ranges, never below 4 addresses. */
export function blockBits(range: Prefix): number {
  const w = width(range.v6);
  if (range.v6) return Math.min(w - 2, Math.max(w - 6, range.bits + 3));
  return Math.min(30, Math.max(26, range.bits + 3));
}

export function blockOf(range: Prefix, value: bigint): Prefix | undefined {
  if (!contains(range, { v6: range.v6, value })) return undefined;
  const bits = blockBits(range);
  const size = 1n << BigInt(width(range.v6) - bits);
  return { v6: range.v6, base: value - ((value - range.base) % size), bits };
}

/** Every block of a range, in address order (lazily: a /8 has 262,144 of them). */
export function* blocksOf(range: Prefix): Generator<Prefix> {
  yield* subnets(range, blockBits(range));
}

/** The key under which a block is leased: its CIDR with '/' made path-safe. */
export function blockKey(block: Prefix): string {
  return formatPrefix(block).replace('/', '_');
}

export function parseBlockKey(key: string): Prefix | undefined {
  return parsePrefix(key.replace('_', '/'));
}

/**
 * Lowest free address across the given blocks, skipping what is taken or
 * reserved (network/broadcast of the whole subnet, gateway, aux addresses).
 */
export function firstFreeIn(blocks: readonly Prefix[], isTaken: (v: bigint) => boolean): bigint | undefined {
  const sorted = [...blocks].sort((a, b) => (a.base < b.base ? -1 : a.base > b.base ? 1 : 0));
  for (const b of sorted) {
    for (let v = b.base; v <= lastAddress(b); v++) if (!isTaken(v)) return v;
  }
  return undefined;
}

export function describe(block: Prefix): string {
  return `${formatIp({ v6: block.v6, value: block.base })}/${block.bits}`;
}
