// The static form of a routed network, with no etcd: every host is given
// the same `-o tsnet.peers=ADDR=BLOCK,…` (its own entry may be listed; it is
// left out) and its own block as --ip-range. Everything is checked before
// anything is made, and each error names the option and the entry.
import { TsnetError, quote } from '../errors.js';
import { OPT } from '../driver/opt.js';
import { containsPrefix, formatIp, formatPrefix, ipFamily, overlaps, parseIp, parsePrefix, prefixSize, type Prefix } from '../net/cidr.js';
import type { RoutedPeerRecord, SubnetRecord } from '../store/schema.js';
import { MAX_PROXIED } from './routes.js';

function bad(entry: string, why: string): TsnetError {
  return new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.peers}: ${quote(entry)}${why.startsWith(':') ? '' : ' '}${why}`);
}

/** Check the ADDR=BLOCK entries of a routed network against its subnets. */
export function parseStaticPeers(entries: readonly string[], ipv4: readonly SubnetRecord[], ipv6: readonly SubnetRecord[]): RoutedPeerRecord[] {
  const subnets = [...ipv4, ...ipv6].map((s) => parsePrefix(s.pool)).filter((p): p is Prefix => p !== undefined);
  const out: Array<RoutedPeerRecord & { prefix: Prefix; entry: string }> = [];
  for (const entry of entries) {
    const eq = entry.indexOf('=');
    if (eq < 0) throw bad(entry, 'is not ADDR=BLOCK (a routed network routes each peer host\'s block through its LAN address, e.g. 192.168.100.202=10.202.2.0/24)');
    const address = entry.slice(0, eq).trim();
    const blockText = entry.slice(eq + 1).trim();
    if (!parseIp(address)) throw bad(entry, `: ${quote(address)} is not an IP address`);
    const block = parsePrefix(blockText, true);
    if (!block) throw bad(entry, `: ${quote(blockText)} is not a CIDR with its host bits zero`);
    if (block.v6 !== (ipFamily(address) === 6)) throw bad(entry, `: an IPv${block.v6 ? 6 : 4} block is routed through the peer's IPv${block.v6 ? 6 : 4} address, not ${address}`);
    const subnet = subnets.find((s) => s.v6 === block.v6);
    if (!subnet) throw bad(entry, `: the network has no IPv${block.v6 ? 6 : 4} subnet`);
    if (!containsPrefix(subnet, block)) throw bad(entry, `: ${formatPrefix(block)} is not inside the network's subnet ${formatPrefix(subnet)}`);
    if (block.v6 && prefixSize(block) > MAX_PROXIED) {
      throw bad(entry, `: ${formatPrefix(block)} is too large; an IPv6 block needs a proxy-NDP entry per address, so at most ${MAX_PROXIED} addresses (/${128 - Math.log2(Number(MAX_PROXIED))} or longer)`);
    }
    const clash = out.find((o) => overlaps(o.prefix, block));
    if (clash) throw bad(entry, `: ${formatPrefix(block)} overlaps ${clash.block} of ${clash.address}`);
    out.push({ address: canonicalIp(address), block: formatPrefix(block), prefix: block, entry });
  }
  if (out.length === 0) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.peers}: the list is empty`);
  return out.map(({ address, block }) => ({ address, block }));
}

/**
 * This host's view of the list: its own entries (by address) go, and no
 * other host's block may overlap the range it hands addresses out from.
 * `ranges` are this host's --ip-range per family, when tsnet's IPAM holds
 * the pools (Docker's IPAM never tells the driver).
 */
export function peersOfOthers(peers: readonly RoutedPeerRecord[], ownAddresses: ReadonlySet<string>, ranges: ReadonlyArray<{ range: Prefix; given: boolean }> | undefined): RoutedPeerRecord[] {
  const others = peers.filter((p) => !ownAddresses.has(canonicalIp(p.address)));
  for (const p of others) {
    const block = parsePrefix(p.block)!;
    const own = ranges?.find((r) => r.range.v6 === block.v6);
    if (!own) continue;
    if (!own.given) {
      throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.peers}: this host needs its own block as --ip-range (the IPv${block.v6 ? 6 : 4} range it hands addresses out from), apart from the peers' blocks; none was given, so it would hand out ${p.block} of ${p.address} too`);
    }
    if (overlaps(own.range, block)) {
      throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.peers}: ${quote(`${p.address}=${p.block}`)}: ${p.block} overlaps this host's --ip-range ${formatPrefix(own.range)}`);
    }
  }
  return others;
}

/** An address in the canonical form `ip` prints. */
export function canonicalIp(text: string): string {
  const ip = parseIp(text);
  return ip ? formatIp(ip) : text;
}
