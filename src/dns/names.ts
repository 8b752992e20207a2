// Which names a container sees, and what they stand for. Design notes:
// - This host's names are on its endpoint records (learned from the Engine
//   API, docker/watcher.ts), so they answer without etcd; other hosts' come
//   from the overlay's view of etcd, which is kept as last seen while etcd is
//   away, so names learned keep resolving through an outage.
// - Scope, as Docker's own DNS: a container sees the names of the networks
//   it is on. The asker is the endpoint whose address the query came from,
//   on the network whose gateway it asked (so an address two networks might
//   share is told apart); its container's other networks come after that
//   one. A name is answered from the first network that has it, so every
//   address returned is one the asker can reach.
// - NAME.NETWORK (the network's name on this host) asks one network only.
import { dnsName } from '../docker/engine.js';
import { parseIp, type Ip } from '../net/cidr.js';
import type { EndpointRecord } from '../store/schema.js';
import type { Store } from '../store/store.js';

/** What etcd holds for another host's endpoint (only the fields read here; anything may be malformed). */
export interface RemoteEndpointValue {
  host: string;
  ip?: unknown;
  ip6?: unknown;
  names?: unknown;
}

export interface NameEntry {
  endpoint: string;
  /** 'local', or the host ID of the host holding it */
  host: string;
  names: string[];
  ipv4?: string;
  ipv6?: string;
}

export interface NameDirectoryDeps {
  store: Store;
  /** other hosts' endpoints of an overlay, by key, as last seen in etcd */
  remote?: (networkId: string) => Iterable<[string, RemoteEndpointValue]> | undefined;
  /** this host's ID in the cluster, to tell its own published entries apart */
  hostId?: () => string | undefined;
}

/** The address of a record's CIDR (10.200.0.2/16 -> 10.200.0.2). */
function addressOf(cidr: string | undefined): string | undefined {
  if (!cidr) return undefined;
  const slash = cidr.indexOf('/');
  return slash < 0 ? cidr : cidr.slice(0, slash);
}

function sameIp(a: string | undefined, b: Ip): boolean {
  const x = a ? parseIp(a) : undefined;
  return x !== undefined && x.v6 === b.v6 && x.value === b.value;
}

function validNames(raw: unknown): string[] {
  if (!Array.isArray(raw)) return [];
  const out: string[] = [];
  for (const n of raw.slice(0, 64)) {
    const d = dnsName(n);
    if (d && !out.includes(d)) out.push(d);
  }
  return out;
}

export class NameDirectory {
  readonly #deps: NameDirectoryDeps;

  constructor(deps: NameDirectoryDeps) {
    this.#deps = deps;
  }

  /** The endpoint on this host that has this address, preferring one on network `via`. */
  asker(source: string, via?: string): EndpointRecord | undefined {
    const ip = parseIp(source);
    if (!ip) return undefined;
    let found: EndpointRecord | undefined;
    for (const ep of Object.values(this.#deps.store.state.endpoints)) {
      if (!sameIp(addressOf(ip.v6 ? ep.addressV6 : ep.address), ip)) continue;
      if (ep.networkId === via) return ep;
      found ??= ep;
    }
    return found;
  }

  /** The networks whose names an endpoint's container sees: its own network first. */
  scope(asker: EndpointRecord): string[] {
    const networks = [asker.networkId];
    const container = asker.dns?.container;
    if (!container) return networks;
    for (const ep of Object.values(this.#deps.store.state.endpoints)) {
      if (ep.dns?.container === container && !networks.includes(ep.networkId)) networks.push(ep.networkId);
    }
    return networks;
  }

  /** Every named endpoint of a network: this host's, then the others' from etcd. */
  entries(networkId: string): NameEntry[] {
    const out: NameEntry[] = [];
    for (const ep of Object.values(this.#deps.store.state.endpoints)) {
      if (ep.networkId !== networkId || !ep.dns) continue;
      const ipv4 = addressOf(ep.address);
      const ipv6 = addressOf(ep.addressV6);
      out.push({ endpoint: ep.id, host: 'local', names: ep.dns.names, ...(ipv4 ? { ipv4 } : {}), ...(ipv6 ? { ipv6 } : {}) });
    }
    const me = this.#deps.hostId?.();
    for (const [key, e] of this.#deps.remote?.(networkId) ?? []) {
      if (!e || typeof e.host !== 'string' || e.host === me) continue;
      const names = validNames(e.names);
      if (names.length === 0) continue;
      const ip = typeof e.ip === 'string' && parseIp(e.ip)?.v6 === false ? e.ip : undefined;
      const ip6 = typeof e.ip6 === 'string' && parseIp(e.ip6)?.v6 === true ? e.ip6 : undefined;
      out.push({ endpoint: key.slice(key.lastIndexOf('/') + 1), host: e.host, names, ...(ip ? { ipv4: ip } : {}), ...(ip6 ? { ipv6: ip6 } : {}) });
    }
    return out;
  }

  /** The network's name on this host, as dockerd told it with a container's names. */
  networkName(networkId: string): string | undefined {
    for (const ep of Object.values(this.#deps.store.state.endpoints)) if (ep.networkId === networkId && ep.dns) return ep.dns.network;
    return undefined;
  }

  /** The first network in scope that knows the name, with every entry there that has it. */
  resolve(name: string, networks: string[]): { network: string; entries: NameEntry[] } | undefined {
    const n = name.toLowerCase().replace(/\.$/, '');
    for (const network of networks) {
      const entries = this.entries(network).filter((e) => e.names.includes(n));
      if (entries.length > 0) return { network, entries };
    }
    const dot = n.lastIndexOf('.');
    if (dot > 0) {
      const suffix = n.slice(dot + 1);
      const network = networks.find((id) => this.networkName(id)?.toLowerCase() === suffix);
      if (network) {
        const base = n.slice(0, dot);
        const entries = this.entries(network).filter((e) => e.names.includes(base));
        if (entries.length > 0) return { network, entries };
      }
    }
    return undefined;
  }

  /** The entry holding an address, in the first network in scope that has one. */
  reverse(ip: Ip, networks: string[]): { network: string; entry: NameEntry } | undefined {
    for (const network of networks) {
      const entry = this.entries(network).find((e) => sameIp(ip.v6 ? e.ipv6 : e.ipv4, ip));
      if (entry) return { network, entry };
    }
    return undefined;
  }
}
