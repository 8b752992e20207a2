// The network driver (protocol.md §2). Each operation takes its network's
// lock, checks everything it can before touching the kernel, programs the
// kernel as a step list with undo, and persists last: a request that fails
// leaves neither a link nor a rule nor a record behind. Deletes and Leave
// succeed for things that do not exist, because dockerd sends them for
// rollbacks and stale endpoints (reliability.md §1.1).
import type { Logger } from 'pino';
import { TsnetError, quote } from '../errors.js';
import type {
  AllocateNetworkRequest,
  CreateEndpointRequest,
  CreateNetworkRequest,
  EndpointRequest,
  GwAllocCheckRequest,
  JoinRequest,
  NetworkRequest,
  ProgramExternalConnectivityRequest,
} from '../api/types.js';
import { contains, formatPrefix, parseCidrAddress, parsePrefix } from '../net/cidr.js';
import { containerMac, shortId } from '../kernel/names.js';
import type { Store } from '../store/store.js';
import type { EndpointRecord, NetworkRecord } from '../store/schema.js';
import { KeyedLock } from '../util/keyed-lock.js';
import { parseNetworkOptions } from './options.js';
import { PORTMAP_KEY, parsePortmap } from '../ports/portmap.js';
import type { PortPublisher } from '../ports/publisher.js';
import type { ModeRegistry } from './modes/registry.js';
import { gatewaySkips } from './gateways.js';
import { runSteps } from './steps.js';
import { findOverlap, parseSubnets, subnetPrefixes } from './subnets.js';

export interface DriverDeps {
  store: Store;
  ports: PortPublisher;
  modes: ModeRegistry;
}

const MAC = /^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/;

/** The first setting in which a repeated CreateNetwork differs from the stored network, if any. */
export function settingsDiff(
  net: NetworkRecord,
  want: { bridge: string; ipv4: NetworkRecord['ipv4']; ipv6: NetworkRecord['ipv6']; cfg: ReturnType<typeof parseNetworkOptions> },
): string | undefined {
  const { cfg } = want;
  const pairs: Array<[string, unknown, unknown]> = [
    ['tsnet.mode', net.mode, cfg.mode],
    ['bridge', net.bridge, want.bridge],
    ['IPv4Data', net.ipv4, want.ipv4],
    ['IPv6Data', net.ipv6, want.ipv6],
    ['internal', net.internal, cfg.internal],
    ['enable_ip_masquerade', net.masquerade, cfg.masquerade],
    ['enable_icc', net.icc, cfg.icc],
    ['gateway_mode_ipv4', net.gatewayMode, cfg.gatewayMode],
    ['gateway_mode_ipv6', net.gatewayModeIpv6 ?? 'nat', cfg.gatewayModeIpv6],
    ['inhibit_ipv4', net.inhibitIpv4, cfg.inhibitIpv4],
    ['host_binding_ipv4', net.hostBindingIpv4, cfg.hostBindingIpv4],
    ['container_iface_prefix', net.ifacePrefix, cfg.ifacePrefix],
    ['trusted_host_interfaces', net.trustedHostInterfaces, cfg.trustedHostInterfaces],
    ['mtu', net.mtu, cfg.mtu ?? net.mtu],
  ];
  for (const [name, a, b] of pairs) if (JSON.stringify(a) !== JSON.stringify(b)) return name;
  return undefined;
}

export class NetworkDriverService {
  readonly #store: Store;
  readonly #ports: PortPublisher;
  readonly #modes: ModeRegistry;
  readonly #locks = new KeyedLock();
  /** closed while reconcile runs; every kernel-touching call waits at it */
  #gate: Promise<void> = Promise.resolve();
  #inflight = 0;
  #idleWaiters: Array<() => void> = [];

  constructor(deps: DriverDeps) {
    this.#store = deps.store;
    this.#ports = deps.ports;
    this.#modes = deps.modes;
  }

  /** Run one request under its network's lock, after any reconcile in progress. */
  async #guard<T>(netId: string, fn: () => Promise<T>): Promise<T> {
    for (;;) {
      const gate = this.#gate;
      await gate;
      if (gate === this.#gate) break;
    }
    this.#inflight++;
    try {
      return await this.#locks.run(netId, fn);
    } finally {
      this.#inflight--;
      if (this.#inflight === 0) for (const w of this.#idleWaiters.splice(0)) w();
    }
  }

  /**
   * Run fn with no request in flight and none starting (reconcile: it must not
   * mistake a half-created network for an orphan).
   */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const previous = this.#gate;
    let open!: () => void;
    this.#gate = previous.then(() => new Promise<void>((resolve) => (open = resolve)));
    await previous;
    if (this.#inflight > 0) await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
    try {
      return await fn();
    } finally {
      open();
    }
  }

  capabilities(): { Scope: string; ConnectivityScope: string; GwAllocChecker: boolean } {
    return { Scope: 'local', ConnectivityScope: 'local', GwAllocChecker: true };
  }

  gwAllocCheck(req: GwAllocCheckRequest): { SkipIPv4: boolean; SkipIPv6: boolean } {
    const skip = gatewaySkips(parseNetworkOptions(req.Options));
    return { SkipIPv4: skip.v4, SkipIPv6: skip.v6 };
  }

  async createNetwork(req: CreateNetworkRequest, log: Logger): Promise<Record<string, never>> {
    const cfg = parseNetworkOptions(req.Options);
    const mode = this.#modes.get(cfg.mode);
    const ipv4 = parseSubnets(req.IPv4Data, false, 'IPv4Data');
    const ipv6 = parseSubnets(req.IPv6Data, true, 'IPv6Data');
    mode.validate(cfg, ipv4, ipv6);
    const id = req.NetworkID;
    const bridge = mode.deviceName(id, cfg);
    return this.#guard(id, async () => {
      const existing = this.#store.state.networks[id];
      if (existing) {
        const diff = settingsDiff(existing, { bridge, ipv4, ipv6, cfg });
        if (!diff) return {};
        throw new TsnetError('TSNET_ERR_NETWORK_EXISTS', `network ${shortId(id)} already exists with other settings (${diff} differs)`);
      }
      const others = Object.values(this.#store.state.networks);
      const sameBridge = others.find((n) => n.bridge === bridge);
      if (sameBridge) {
        throw new TsnetError('TSNET_ERR_BRIDGE_IN_USE', `${mode.deviceKind} ${bridge} is already used by tsnet network ${shortId(sameBridge.id)}`);
      }
      const prefixes = subnetPrefixes({ ipv4, ipv6 });
      const clash = findOverlap(prefixes, others);
      if (clash) {
        throw new TsnetError(
          'TSNET_ERR_POOL_OVERLAP',
          `subnet ${formatPrefix(clash.a)} overlaps ${formatPrefix(clash.b)} of tsnet network ${shortId(clash.net.id)} (${clash.net.bridge})`,
        );
      }
      const plan = await mode.planNetwork({ id, device: bridge, req, cfg, ipv4, ipv6, others, log });
      const { record } = plan;
      const undo = await runSteps(plan.steps, log);
      this.#store.state.networks[id] = record;
      const extra = plan.beforeCommit?.() ?? [];
      try {
        await this.#store.commit([['networks', id], ...extra]);
      } catch (err) {
        delete this.#store.state.networks[id];
        plan.revertCommit?.();
        await undo().catch(() => undefined);
        throw err;
      }
      plan.activate?.();
      log.info({ ...plan.logFields, subnets: prefixes.map(formatPrefix), internal: cfg.internal }, 'network created');
      return {};
    });
  }

  async deleteNetwork(req: NetworkRequest, log: Logger): Promise<Record<string, never>> {
    const id = req.NetworkID;
    return this.#guard(id, async () => {
      const net = this.#store.state.networks[id];
      if (!net) {
        await this.#modes.removeOrphanNetwork(id, log);
        return {};
      }
      const mode = this.#modes.of(net);
      const errors: unknown[] = [];
      const stale = Object.values(this.#store.state.endpoints).filter((e) => e.networkId === id);
      for (const ep of stale) {
        log.warn({ endpointId: ep.id }, 'deleting a stale endpoint along with its network');
        await this.#ports.unpublish(ep, log).catch((err) => errors.push(err));
        await mode.deleteEndpoint(net, ep).catch((err) => errors.push(err));
      }
      errors.push(...(await mode.deleteNetwork(net, log)));
      // dockerd forgets the network whatever we answer (protocol.md §1.5), so
      // the record goes too; anything left in the kernel carries our tag and
      // the next reconcile removes it.
      for (const ep of stale) delete this.#store.state.endpoints[ep.id];
      delete this.#store.state.networks[id];
      // A journal line naming what went, not a rewrite of the whole store.
      await this.#store.commit([['networks', id], ...stale.map((e) => ['endpoints', e.id])]);
      await mode.afterDelete?.(net).catch((err) => errors.push(err));
      if (errors.length > 0) {
        log.error({ errors: errors.map((e) => (e as Error).message) }, 'network deleted with cleanup errors; reconcile will retry');
      } else log.info({ bridge: net.bridge }, 'network deleted');
      return {};
    });
  }

  async createEndpoint(req: CreateEndpointRequest, log: Logger): Promise<{ Interface?: { MacAddress: string } }> {
    const { NetworkID: netId, EndpointID: epId } = req;
    const iface = req.Interface ?? {};
    return this.#guard(netId, async () => {
      const net = this.#requireNetwork(netId);
      const existing = this.#store.state.endpoints[epId];
      if (existing) {
        if (existing.networkId === netId) return existing.macAssigned ? { Interface: { MacAddress: existing.mac } } : {};
        throw new TsnetError('TSNET_ERR_ENDPOINT_EXISTS', `endpoint ${shortId(epId)} already exists on network ${shortId(existing.networkId)}`);
      }
      const address = this.#checkAddress(net, iface.Address ?? '', false);
      const addressV6 = this.#checkAddress(net, iface.AddressIPv6 ?? '', true);
      const givenMac = iface.MacAddress ?? '';
      if (givenMac !== '' && !MAC.test(givenMac)) {
        throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `Interface.MacAddress: ${quote(givenMac)} is not a MAC address`);
      }
      const mac = givenMac !== '' ? givenMac.toLowerCase() : containerMac(netId, address ?? addressV6, epId);
      const mode = this.#modes.of(net);
      const superseded = await this.#dropSuperseded(net, epId, address, addressV6, log);
      const plan = await mode.planEndpoint({ id: epId, net, mac, address, addressV6 });
      const { hostVeth: host, peerVeth: peer } = plan;
      const undo = await runSteps(plan.steps, log);
      const record: EndpointRecord = {
        id: epId,
        networkId: netId,
        hostVeth: host,
        peerVeth: peer,
        mac: plan.fixedMac ?? mac,
        macAssigned: givenMac === '' && plan.fixedMac === undefined,
        ...(address ? { address } : {}),
        ...(addressV6 ? { addressV6 } : {}),
        ports: [],
        createdAt: new Date().toISOString(),
      };
      this.#store.state.endpoints[epId] = record;
      try {
        await this.#store.commit([['endpoints', epId], ...superseded.map((id) => ['endpoints', id])]);
      } catch (err) {
        delete this.#store.state.endpoints[epId];
        await undo().catch(() => undefined);
        throw err;
      }
      await mode.endpointCreated?.(net, record);
      log.info({ hostVeth: host, address, addressV6, mac }, 'endpoint created');
      // Never echo a field dockerd filled in (protocol.md §2.6).
      return record.macAssigned ? { Interface: { MacAddress: record.mac } } : {};
    });
  }

  /**
   * dockerd hands an address to one endpoint of a network at a time, so a
   * record of ours holding the same address belongs to an endpoint dockerd
   * has given up: a CreateEndpoint whose answer it never got (tsnet killed
   * mid-request: dockerd releases the address and sends no DeleteEndpoint),
   * or a container that died while dockerd was down. Left in place it would
   * keep a veth and a second record of the address until the idle cutoff;
   * it goes now, devices and ports with it. Returns the records dropped.
   */
  async #dropSuperseded(net: NetworkRecord, epId: string, address: string | undefined, addressV6: string | undefined, log: Logger): Promise<string[]> {
    const ip = (cidr: string | undefined): string | undefined => cidr?.slice(0, cidr.indexOf('/'));
    const mine = [ip(address), ip(addressV6)].filter((a): a is string => a !== undefined);
    if (mine.length === 0) return [];
    const stale = Object.values(this.#store.state.endpoints).filter((e) => e.networkId === net.id && e.id !== epId && [ip(e.address), ip(e.addressV6)].some((a) => a !== undefined && mine.includes(a)));
    for (const ep of stale) {
      log.warn({ staleEndpoint: ep.id, address: ep.address, addressV6: ep.addressV6, joined: ep.sandboxKey !== undefined }, 'dropping an endpoint whose address dockerd gave to a new one (dockerd gave it up)');
      await this.#ports.unpublish(ep, log);
      await this.#modes.of(net).deleteEndpoint(net, ep);
      delete this.#store.state.endpoints[ep.id];
    }
    return stale.map((e) => e.id);
  }

  #checkAddress(net: NetworkRecord, cidr: string, v6: boolean): string | undefined {
    if (cidr === '') return undefined;
    const field = v6 ? 'Interface.AddressIPv6' : 'Interface.Address';
    const parsed = parseCidrAddress(cidr);
    if (!parsed || parsed.ip.v6 !== v6) throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `${field}: ${quote(cidr)} is not an ${v6 ? 'IPv6' : 'IPv4'} address in CIDR form`);
    const subnets = (v6 ? net.ipv6 : net.ipv4).map((s) => parsePrefix(s.pool)!);
    if (subnets.length > 0 && !subnets.some((p) => contains(p, parsed.ip))) {
      throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `${field}: ${cidr} is not in the network's subnet ${subnets.map(formatPrefix).join(', ')}`);
    }
    return cidr;
  }

  #requireNetwork(id: string): NetworkRecord {
    const net = this.#store.state.networks[id];
    if (!net) {
      throw new TsnetError(
        'TSNET_ERR_NETWORK_NOT_FOUND',
        `network ${shortId(id)} not found: it was not created through this tsnet (state directory ${this.#store.dir})`,
      );
    }
    return net;
  }

  #requireEndpoint(netId: string, epId: string): EndpointRecord {
    const ep = this.#store.state.endpoints[epId];
    if (!ep || ep.networkId !== netId) {
      throw new TsnetError('TSNET_ERR_ENDPOINT_NOT_FOUND', `endpoint ${shortId(epId)} not found on network ${shortId(netId)}`);
    }
    return ep;
  }

  endpointOperInfo(req: EndpointRequest): { Value: Record<string, unknown> } {
    const ep = this.#store.state.endpoints[req.EndpointID];
    if (!ep) return { Value: {} };
    const protoNumber = { tcp: 6, udp: 17, sctp: 132 } as const;
    const ip = ep.address?.slice(0, ep.address.indexOf('/')) ?? '';
    // Docker's own shape; dockerd may ignore it for remote drivers (see README).
    return {
      Value: {
        'tsnet.host_veth': ep.hostVeth,
        'tsnet.mac': ep.mac,
        [PORTMAP_KEY]: ep.ports.map((b) => ({ Proto: protoNumber[b.proto], IP: ip, Port: b.containerPort, HostIP: b.hostIp, HostPort: b.hostPort, HostPortEnd: b.hostPort })),
      } as Record<string, unknown>,
    };
  }

  async join(req: JoinRequest, log: Logger): Promise<Record<string, unknown>> {
    return this.#guard(req.NetworkID, async () => {
      const net = this.#requireNetwork(req.NetworkID);
      const ep = this.#requireEndpoint(req.NetworkID, req.EndpointID);
      if (req.SandboxKey) {
        ep.sandboxKey = req.SandboxKey.slice(0, 4096);
        this.#store.commitLazy([['endpoints', ep.id]]);
      }
      const res = this.#modes.of(net).join(net, ep);
      log.debug({ srcName: ep.peerVeth, gateway: res.Gateway }, 'endpoint joined');
      return res;
    });
  }

  async leave(req: EndpointRequest, log: Logger): Promise<Record<string, never>> {
    return this.#guard(req.NetworkID, async () => {
      const ep = this.#store.state.endpoints[req.EndpointID];
      if (!ep) return {};
      const net = this.#store.state.networks[ep.networkId];
      await this.#modes.of(net).leave?.(net, ep, log);
      delete ep.sandboxKey;
      this.#store.commitLazy([['endpoints', ep.id]]);
      log.debug('endpoint left');
      return {};
    });
  }

  async deleteEndpoint(req: EndpointRequest, log: Logger): Promise<Record<string, never>> {
    return this.#guard(req.NetworkID, async () => {
      const ep = this.#store.state.endpoints[req.EndpointID];
      if (!ep) {
        // A rollback for an endpoint we never finished, or a repeat: remove a tagged leftover if any.
        await this.#modes.removeOrphanEndpoint(req.EndpointID);
        return {};
      }
      await this.#ports.unpublish(ep, log);
      const net = this.#store.state.networks[ep.networkId];
      await this.#modes.of(net).deleteEndpoint(net, ep);
      delete this.#store.state.endpoints[ep.id];
      await this.#store.commit([['endpoints', ep.id]]);
      log.info({ hostVeth: ep.hostVeth }, 'endpoint deleted');
      return {};
    });
  }

  /**
   * Called for the endpoint that gives its container the default gateway
   * (our Join returns one): publish the container's ports here, as Docker's
   * bridge driver does. Re-programming replaces the earlier bindings.
   */
  async programExternalConnectivity(req: ProgramExternalConnectivityRequest, log: Logger): Promise<Record<string, never>> {
    const requests = parsePortmap(req.Options?.[PORTMAP_KEY]);
    return this.#guard(req.NetworkID, async () => {
      const net = this.#requireNetwork(req.NetworkID);
      const ep = this.#requireEndpoint(req.NetworkID, req.EndpointID);
      if (requests.length > 0 && !this.#modes.of(net).publishesPorts) {
        throw new TsnetError(
          'TSNET_ERR_INVALID_OPTION',
          `published ports (-p) do not apply to a ${net.mode} network: its containers are on the LAN with addresses of their own; reach them at ${ep.address ? ep.address.slice(0, ep.address.indexOf('/')) : 'their address'} instead`,
        );
      }
      if (net.internal) {
        if (requests.length > 0) log.warn('ports are not published from an --internal network');
        return {};
      }
      const hadPorts = ep.ports.length > 0;
      if (hadPorts) {
        await this.#ports.unpublish(ep, log);
        ep.ports = [];
      }
      if (requests.length === 0) {
        // Only named records are journalled: the cleared bindings must be written here.
        if (hadPorts) await this.#store.commit([['endpoints', ep.id]]);
        return {};
      }
      const ipv6Host = await this.#ports.ipv6Enabled();
      const reclaimed = await this.#reclaimStalePorts(requests, net, ep, ipv6Host, log);
      const bindings = await this.#ports.publish(ep, net, requests, ipv6Host, log);
      ep.ports = bindings;
      try {
        await this.#store.commit([['endpoints', ep.id], ...reclaimed.map((id) => ['endpoints', id])]);
      } catch (err) {
        await this.#ports.unpublish(ep, log).catch(() => undefined);
        ep.ports = [];
        throw err;
      }
      return {};
    });
  }

  /**
   * A host port held by an endpoint whose veth is gone (its container died
   * while dockerd was down, say) is released rather than refused: otherwise
   * a restarted container could never get its own port back.
   */
  async #reclaimStalePorts(requests: ReturnType<typeof parsePortmap>, net: NetworkRecord, ep: EndpointRecord, ipv6Host: boolean, log: Logger): Promise<string[]> {
    const dropped: string[] = [];
    for (const holderId of this.#ports.holders(requests, net.hostBindingIpv4, ep.address !== undefined, ep.addressV6 !== undefined, ipv6Host)) {
      const holder = this.#store.state.endpoints[holderId];
      if (holder && (await this.#modes.of(this.#store.state.networks[holder.networkId]).endpointAlive(holder))) continue;
      log.warn({ staleEndpoint: holderId }, 'releasing host ports held by an endpoint whose veth is gone');
      if (holder) {
        await this.#ports.unpublish(holder, log);
        delete this.#store.state.endpoints[holderId];
        dropped.push(holderId);
      } else {
        await this.#ports.unpublish({ id: holderId, ports: [] } as unknown as EndpointRecord, log);
      }
    }
    return dropped;
  }

  async revokeExternalConnectivity(req: EndpointRequest, log: Logger): Promise<Record<string, never>> {
    return this.#guard(req.NetworkID, async () => {
      const ep = this.#store.state.endpoints[req.EndpointID];
      if (!ep || ep.ports.length === 0) return {};
      await this.#ports.unpublish(ep, log);
      ep.ports = [];
      await this.#store.commit([['endpoints', ep.id]]);
      return {};
    });
  }

  /** Swarm-only calls (Scope "global"); tsnet is local-scope, answer harmlessly. */
  allocateNetwork(req: AllocateNetworkRequest): { Options: Record<string, string> } {
    return { Options: { ...(req.Options ?? {}) } };
  }
}
