// Published ports (-p, -P) for one host. Design notes:
// - Host ports are reserved in memory (proto/address/port), so two
//   mappings never overlap: a wildcard binding conflicts with every address
//   of its family, as bind(2) would.
// - Each binding also holds its port with a userland proxy socket (proxy.ts)
//   which finds conflicts with anything else on the host and carries the
//   loopback path; the kernel DNATs everything else through map elements in
//   tsnet's nftables table (firewall/nft.ts), one transaction per container
//   whatever the number of mappings already in place.
// - Loopback-bound ports get a raw-table drop for packets that arrive from
//   another interface addressed to 127.0.0.1 (Docker 28's fix for
//   moby/moby#45610); route_localnet is never set.
import type { Logger } from 'pino';
import { TsnetError } from '../errors.js';
import type { Firewall, FirewallPort } from '../firewall/firewall.js';
import type { Runner } from '../kernel/exec.js';
import { listAddrs } from '../kernel/ip.js';
import { ipFamily as family } from '../net/cidr.js';
import type { EndpointRecord, NetworkRecord, PortBinding } from '../store/schema.js';
import { isLoopback, isWildcard, type PortRequest, type Proto } from './portmap.js';
import { startProxy, type Proxy } from './proxy.js';

export interface PublisherDeps {
  runner: Runner;
  firewall: Firewall;
  log: Logger;
}

function plainIp(cidr: string | undefined): string | undefined {
  return cidr ? cidr.slice(0, cidr.indexOf('/')) : undefined;
}

/**
 * Where a binding's connections go: the container's address of the host
 * address's family; for IPv6 clients of a container with no IPv6 address,
 * its IPv4 address through the userland proxy, as docker-proxy relays them
 * (the kernel cannot DNAT across families; SCTP has no proxy).
 */
function upstream(hostIp: string, proto: Proto, ep: Pick<EndpointRecord, 'address' | 'addressV6'>): string | undefined {
  if (family(hostIp) === 4) return plainIp(ep.address);
  return plainIp(ep.addressV6) ?? (proto === 'sctp' ? undefined : plainIp(ep.address));
}

/** The kernel's share of the bindings: DNAT within one family only (relayed ones are the proxy's). */
export function toFirewallPorts(ep: Pick<EndpointRecord, 'address' | 'addressV6' | 'ports'>): FirewallPort[] {
  const out: FirewallPort[] = [];
  for (const b of ep.ports) {
    const containerIp = family(b.hostIp) === 6 ? plainIp(ep.addressV6) : plainIp(ep.address);
    if (containerIp) out.push({ ...b, containerIp });
  }
  return out;
}

/** One request with its host addresses settled; every address is bound on the same host port. */
export interface Job {
  r: PortRequest;
  hostIps: string[];
}

/**
 * Settle each request's host addresses. An explicit HostIP stays as it is. A
 * request without one takes the network's host_binding_ipv4; when that is
 * the IPv4 wildcard (the default) and the host has IPv6, the port is also
 * published on [::] with the same host port, so IPv6 clients reach it as
 * they do with Docker: DNAT to the container's IPv6 address (ip6tables in
 * Docker 27), or for an IPv4-only container the proxy's relay (docker-proxy
 * on [::] in 20.10). Docker publishes a default binding only for the
 * families the container has.
 */
export function plan(requests: readonly PortRequest[], defaultHostIp: string, has4: boolean, has6: boolean, ipv6Host: boolean): Job[] {
  const jobs: Job[] = [];
  for (const r of requests) {
    if (r.hostIp) {
      jobs.push({ r, hostIps: [r.hostIp] });
      continue;
    }
    const hostIps: string[] = [];
    if (family(defaultHostIp) === 6 ? has6 : has4) hostIps.push(defaultHostIp);
    if (defaultHostIp === '0.0.0.0' && ipv6Host && (has6 || (has4 && r.proto !== 'sctp'))) hostIps.push('::');
    if (hostIps.length > 0) jobs.push({ r, hostIps });
  }
  return jobs;
}

export class PortPublisher {
  readonly #runner: Runner;
  readonly #firewall: Firewall;
  readonly #log: Logger;
  /** "tcp/4/0.0.0.0/8080" -> endpoint id */
  readonly #reserved = new Map<string, string>();
  /** "tcp/4/8080" -> the keys of #reserved on that port and family; endpoint id -> its keys (no scans of every mapping) */
  readonly #byPort = new Map<string, Set<string>>();
  readonly #byOwner = new Map<string, Set<string>>();
  readonly #proxies = new Map<string, Proxy[]>();

  constructor(deps: PublisherDeps) {
    this.#runner = deps.runner;
    this.#firewall = deps.firewall;
    this.#log = deps.log.child({ component: 'ports' });
  }

  #key(proto: Proto, ip: string, port: number): string {
    return `${proto}/${ip}/${port}`;
  }

  #portKey(proto: Proto, ip: string, port: number): string {
    return `${proto}/${family(ip)}/${port}`;
  }

  #reserve(proto: Proto, ip: string, port: number, owner: string): string {
    const key = this.#key(proto, ip, port);
    this.#release(key);
    this.#reserved.set(key, owner);
    const pk = this.#portKey(proto, ip, port);
    if (!this.#byPort.has(pk)) this.#byPort.set(pk, new Set());
    this.#byPort.get(pk)!.add(key);
    if (!this.#byOwner.has(owner)) this.#byOwner.set(owner, new Set());
    this.#byOwner.get(owner)!.add(key);
    return key;
  }

  #release(key: string): void {
    const owner = this.#reserved.get(key);
    if (owner === undefined) return;
    this.#reserved.delete(key);
    const [proto, ip, port] = key.split('/') as [Proto, string, string];
    const pk = this.#portKey(proto, ip, Number(port));
    this.#byPort.get(pk)?.delete(key);
    if (this.#byPort.get(pk)?.size === 0) this.#byPort.delete(pk);
    this.#byOwner.get(owner)?.delete(key);
    if (this.#byOwner.get(owner)?.size === 0) this.#byOwner.delete(owner);
  }

  /** Who holds proto/ip/port, taking wildcards into account. */
  #holder(proto: Proto, ip: string, port: number): string | undefined {
    const any = family(ip) === 6 ? '::' : '0.0.0.0';
    const direct = this.#reserved.get(this.#key(proto, ip, port)) ?? this.#reserved.get(this.#key(proto, any, port));
    if (direct || !isWildcard(ip)) return direct;
    // A wildcard conflicts with any address of its family on that port.
    const [first] = this.#byPort.get(this.#portKey(proto, ip, port)) ?? [];
    return first === undefined ? undefined : this.#reserved.get(first);
  }

  /** Endpoints holding fixed host ports these requests ask for (to check for stale holders first). */
  holders(requests: PortRequest[], defaultHostIp: string, has4 = true, has6 = false, ipv6Host = false): string[] {
    const out = new Set<string>();
    for (const { r, hostIps } of plan(requests, defaultHostIp, has4, has6, ipv6Host)) {
      if (r.hostPortStart === 0 || r.hostPortStart !== r.hostPortEnd) continue;
      for (const hostIp of hostIps) {
        const h = this.#holder(r.proto, hostIp, r.hostPortStart);
        if (h) out.add(h);
      }
    }
    return [...out];
  }

  async #ephemeralRange(): Promise<[number, number]> {
    const text = await this.#runner.readSysctl('net/ipv4/ip_local_port_range');
    const m = text ? /^(\d+)\s+(\d+)$/.exec(text) : null;
    return m ? [Number(m[1]), Number(m[2])] : [32768, 60999];
  }

  /** Whether this host does IPv6 at all (a [::] socket would fail otherwise). */
  async ipv6Enabled(): Promise<boolean> {
    return (await this.#runner.readSysctl('net/ipv6/conf/all/disable_ipv6')) === '0';
  }

  async #hostAddresses(): Promise<Set<string>> {
    const all = await listAddrs(this.#runner);
    return new Set(all.flatMap((l) => l.addr_info.map((a) => a.local)));
  }

  /** Bind and program every request; all or nothing. `ipv6Host`: what ipv6Enabled() said for this request. */
  async publish(ep: EndpointRecord, net: NetworkRecord, requests: PortRequest[], ipv6Host: boolean, log: Logger): Promise<PortBinding[]> {
    const bindings: PortBinding[] = [];
    const proxies: Proxy[] = [];
    const keys: string[] = [];
    let addrs: Set<string> | undefined;
    let range: [number, number] | undefined;
    try {
      for (const { r, hostIps } of plan(requests, net.hostBindingIpv4, ep.address !== undefined, ep.addressV6 !== undefined, ipv6Host)) {
        const targets = [];
        for (const hostIp of hostIps) {
          const containerIp = upstream(hostIp, r.proto, ep);
          if (!containerIp) {
            throw new TsnetError('TSNET_ERR_INVALID_OPTION', `HostIP ${hostIp}: the container has no IPv${family(hostIp)} address on this network`);
          }
          if (!isWildcard(hostIp) && !isLoopback(hostIp)) {
            addrs ??= await this.#hostAddresses();
            if (!addrs.has(hostIp)) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `HostIP ${hostIp} is not an address of this host`);
          }
          targets.push({ hostIp, containerIp });
        }
        const candidates: [number, number] = r.hostPortStart === 0 ? (range ??= await this.#ephemeralRange()) : [r.hostPortStart, r.hostPortEnd];
        const single = candidates[0] === candidates[1];
        let port = candidates[0];
        // A port is taken only when every address of the request can have it
        // (the [::] twin of a -P or range binding moves on with its sibling).
        for (; port <= candidates[1]; port++) {
          const holder = targets.map((x) => [x.hostIp, this.#holder(r.proto, x.hostIp, port)] as const).find(([, h]) => h);
          if (holder) {
            if (single) throw new TsnetError('TSNET_ERR_PORT_IN_USE', `host port ${holder[0]}:${port}/${r.proto} is already published by endpoint ${holder[1]!.slice(0, 12)}`);
            continue;
          }
          const started: Proxy[] = [];
          try {
            for (const x of targets) started.push(await startProxy({ proto: r.proto, hostIp: x.hostIp, hostPort: port, containerIp: x.containerIp, containerPort: r.containerPort }, this.#log));
          } catch (err) {
            await Promise.all(started.map((p) => p.close()));
            if (single || !(err instanceof TsnetError) || err.code !== 'TSNET_ERR_PORT_IN_USE') throw err;
            continue;
          }
          proxies.push(...started);
          break;
        }
        if (port > candidates[1]) throw new TsnetError('TSNET_ERR_PORT_IN_USE', `no free host port for ${r.proto} in ${candidates[0]}-${candidates[1]} on ${hostIps.join(' and ')}`);
        for (const { hostIp } of targets) {
          keys.push(this.#reserve(r.proto, hostIp, port, ep.id));
          bindings.push({ proto: r.proto, containerPort: r.containerPort, hostIp, hostPort: port });
        }
      }
      await this.#firewall.addPorts(toFirewallPorts({ ...ep, ports: bindings }));
    } catch (err) {
      for (const k of keys) this.#release(k);
      await Promise.all(proxies.map((p) => p.close()));
      throw err;
    }
    this.#proxies.set(ep.id, [...(this.#proxies.get(ep.id) ?? []), ...proxies]);
    log.info({ ports: bindings.map((b) => `${b.hostIp}:${b.hostPort}->${b.containerPort}/${b.proto}`) }, 'ports published');
    return bindings;
  }

  /** Undo publish: rules, proxies, reservations, and conntrack entries of the mappings. Idempotent. */
  async unpublish(ep: EndpointRecord, log: Logger): Promise<void> {
    if (ep.ports.length > 0) await this.#firewall.removePorts(toFirewallPorts(ep));
    await Promise.all((this.#proxies.get(ep.id) ?? []).map((p) => p.close()));
    this.#proxies.delete(ep.id);
    for (const k of [...(this.#byOwner.get(ep.id) ?? [])]) this.#release(k);
    if (ep.ports.length > 0) {
      // Stale NAT entries would keep steering a long-lived UDP flow to a gone container.
      for (const ip of [plainIp(ep.address), plainIp(ep.addressV6)]) {
        if (ip) await this.#runner.run('conntrack', ['-D', '-d', ip]).catch(() => undefined);
      }
      log.info({ ports: ep.ports.length }, 'ports unpublished');
    }
  }

  /** After a restart: re-take the reservations and proxies of stored bindings (rules come back with the firewall sync). */
  async restore(endpoints: EndpointRecord[]): Promise<string[]> {
    const problems: string[] = [];
    for (const ep of endpoints) {
      if (ep.ports.length === 0 || this.#proxies.has(ep.id)) continue;
      const proxies: Proxy[] = [];
      for (const b of ep.ports) {
        this.#reserve(b.proto, b.hostIp, b.hostPort, ep.id);
        const containerIp = upstream(b.hostIp, b.proto, ep);
        if (!containerIp) continue;
        try {
          proxies.push(await startProxy({ ...b, containerIp }, this.#log));
        } catch (err) {
          // The DNAT rules still work; only loopback access and the port guard are lost.
          problems.push(`${b.hostIp}:${b.hostPort}/${b.proto} of endpoint ${ep.id.slice(0, 12)}: ${(err as Error).message}`);
        }
      }
      this.#proxies.set(ep.id, proxies);
    }
    if (problems.length > 0) this.#log.error({ problems }, 'some published ports could not be re-bound after restart; loopback access to them is lost');
    return problems;
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.#proxies.values()].flat().map((p) => p.close()));
    this.#proxies.clear();
  }
}
