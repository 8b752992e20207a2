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
import type { Firewall, FirewallNetwork } from '../firewall/firewall.js';
import { contains, formatPrefix, parseCidrAddress, parsePrefix } from '../ipam/cidr.js';
import { isExists, type Runner } from '../kernel/exec.js';
import { defaultRouteInfo, deleteLink, getLink, ipBatch } from '../kernel/ip.js';
import { createBridge, createVeth } from '../kernel/link.js';
import {
  ALIAS_PREFIX,
  bridgeMac,
  bridgeName,
  endpointAlias,
  endpointMac,
  hostVethName,
  networkAlias,
  peerVethName,
  shortId,
  vxlanName,
} from '../kernel/names.js';
import type { Store } from '../store/store.js';
import type { EndpointRecord, NetworkRecord } from '../store/schema.js';
import { KeyedLock } from '../util/keyed-lock.js';
import { parseNetworkOptions } from './options.js';
import { PORTMAP_KEY, parsePortmap } from '../ports/portmap.js';
import type { PortPublisher } from '../ports/publisher.js';
import { vxlanOverhead, type OverlayManager } from '../overlay/manager.js';
import { createVxlan } from '../kernel/vxlan.js';
import { runSteps, type Step } from './steps.js';
import { findOverlap, gatewayIp, parseSubnets, subnetPrefixes } from './subnets.js';
import { gatewaySkips } from './gateways.js';

export interface DriverDeps {
  runner: Runner;
  store: Store;
  firewall: Firewall;
  ports: PortPublisher;
  overlay: OverlayManager;
  log: Logger;
}

const MAC = /^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/;

export function firewallSpec(net: NetworkRecord): FirewallNetwork {
  return {
    sid: shortId(net.id),
    bridge: net.bridge,
    internal: net.internal,
    icc: net.icc,
    masquerade4: net.masquerade && net.gatewayMode !== 'routed',
    masquerade6: net.masquerade && (net.gatewayModeIpv6 ?? 'nat') !== 'routed',
    directAccess4: net.gatewayMode === 'routed' || net.gatewayMode === 'nat-unprotected',
    directAccess6: net.gatewayModeIpv6 === 'routed' || net.gatewayModeIpv6 === 'nat-unprotected',
    subnets4: net.ipv4.map((s) => s.pool),
    subnets6: net.ipv6.map((s) => s.pool),
  };
}

/** The addresses tsnet puts on a network's bridge. */
export function bridgeAddresses(net: NetworkRecord): string[] {
  // A gateway dockerd before 28 allocated although GwAllocCheck would have skipped it stays unused.
  const skip = gatewaySkips({ ...net, gatewayModeIpv6: net.gatewayModeIpv6 ?? 'nat' });
  const v4 = net.inhibitIpv4 || skip.v4 ? [] : net.ipv4.map((s) => s.gateway).filter((g): g is string => !!g);
  const v6 = skip.v6 ? [] : net.ipv6.map((s) => s.gateway).filter((g): g is string => !!g);
  return [...v4, ...v6];
}

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
  readonly #runner: Runner;
  readonly #store: Store;
  readonly #firewall: Firewall;
  readonly #ports: PortPublisher;
  readonly #overlay: OverlayManager;
  readonly #log: Logger;
  readonly #locks = new KeyedLock();
  /** closed while reconcile runs; every kernel-touching call waits at it */
  #gate: Promise<void> = Promise.resolve();
  #inflight = 0;
  #idleWaiters: Array<() => void> = [];

  constructor(deps: DriverDeps) {
    this.#runner = deps.runner;
    this.#store = deps.store;
    this.#firewall = deps.firewall;
    this.#ports = deps.ports;
    this.#overlay = deps.overlay;
    this.#log = deps.log.child({ component: 'driver' });
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
    const ipv4 = parseSubnets(req.IPv4Data, false, 'IPv4Data');
    const ipv6 = parseSubnets(req.IPv6Data, true, 'IPv6Data');
    const skip = gatewaySkips(cfg);
    for (const [s, fam] of [...ipv4.map((s) => [s, 'IPv4Data'] as const), ...ipv6.map((s) => [s, 'IPv6Data'] as const)]) {
      if (!s.gateway && !(fam === 'IPv4Data' ? skip.v4 || cfg.inhibitIpv4 : skip.v6)) {
        throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `${fam}: no Gateway for ${s.pool}; a tsnet bridge needs one unless the network is --internal with gateway mode isolated`);
      }
    }
    const id = req.NetworkID;
    const bridge = cfg.bridgeName ?? bridgeName(id);
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
        throw new TsnetError('TSNET_ERR_BRIDGE_IN_USE', `bridge ${bridge} is already used by tsnet network ${shortId(sameBridge.id)}`);
      }
      const prefixes = subnetPrefixes({ ipv4, ipv6 });
      const clash = findOverlap(prefixes, others);
      if (clash) {
        throw new TsnetError(
          'TSNET_ERR_POOL_OVERLAP',
          `subnet ${formatPrefix(clash.a)} overlaps ${formatPrefix(clash.b)} of tsnet network ${shortId(clash.net.id)} (${clash.net.bridge})`,
        );
      }

      // Overlays: VNI agreed in the cluster, underlay found, before any kernel change.
      let overlay: Awaited<ReturnType<OverlayManager['plan']>> | undefined;
      let poolId: string | undefined;
      if (cfg.mode === 'overlay') {
        const space = req.IPv4Data?.[0]?.AddressSpace ?? '';
        const candidate = ipv4[0] ? `${space}/${ipv4[0].pool}` : undefined;
        poolId = candidate && this.#store.state.pools[candidate] ? candidate : undefined;
        overlay = await this.#overlay.plan({
          id,
          subnet: ipv4[0]?.pool,
          subPool: poolId ? this.#store.state.pools[poolId]!.subPool : undefined,
          gateway: ipv4[0]?.gateway,
          poolId,
          vni: cfg.vni,
          peers: cfg.peers,
          vxlan: vxlanName(id),
        });
      }
      let adopt = false;
      const link = await getLink(this.#runner, bridge);
      if (link) {
        if (link.ifalias === networkAlias(id)) {
          // Our own leftover from an earlier, interrupted create of this very network.
          await deleteLink(this.#runner, bridge);
        } else if (link.ifalias?.startsWith(ALIAS_PREFIX)) {
          throw new TsnetError('TSNET_ERR_BRIDGE_IN_USE', `bridge ${bridge} is a leftover of another tsnet network (${link.ifalias}); restart tsnet to clean it up`);
        } else if (cfg.bridgeName && link.linkinfo?.info_kind === 'bridge') {
          adopt = true;
        } else {
          throw new TsnetError('TSNET_ERR_BRIDGE_IN_USE', `cannot use ${bridge}: a ${link.linkinfo?.info_kind ?? 'network'} device with that name exists`);
        }
      }

      const mtu = cfg.mtu ?? (overlay ? overlay.underlay.mtu - vxlanOverhead(overlay.underlay.local) : await this.#defaultMtu());
      const record: NetworkRecord = {
        id,
        mode: overlay ? 'overlay' : 'bridge',
        ...(overlay ? { overlay: overlay.overlay } : {}),
        bridge,
        createdBridge: !adopt,
        ipv4,
        ipv6,
        internal: cfg.internal,
        mtu,
        masquerade: cfg.masquerade,
        icc: cfg.icc,
        gatewayMode: cfg.gatewayMode,
        gatewayModeIpv6: cfg.gatewayModeIpv6,
        hostBindingIpv4: cfg.hostBindingIpv4,
        inhibitIpv4: cfg.inhibitIpv4,
        ifacePrefix: cfg.ifacePrefix,
        trustedHostInterfaces: cfg.trustedHostInterfaces,
        options: cfg.generic,
        createdAt: new Date().toISOString(),
      };
      const addresses = bridgeAddresses(record);
      const steps: Step[] = [
        {
          name: 'bridge',
          when: !adopt,
          do: () =>
            createBridge(this.#runner, {
              name: bridge,
              mac: bridgeMac(record),
              mtu,
              alias: networkAlias(id),
              addresses,
              disableIpv6: ipv6.length === 0,
            }),
          undo: async () => void (await deleteLink(this.#runner, bridge)),
        },
        {
          name: 'adopt-bridge',
          when: adopt,
          do: () => ipBatch(this.#runner, [...addresses.map((a) => ['addr', 'replace', a, 'dev', bridge]), ['link', 'set', 'dev', bridge, 'up']]),
          undo: () => ipBatch(this.#runner, addresses.map((a) => ['addr', 'del', a, 'dev', bridge]), { force: true }).catch(() => undefined),
        },
        {
          name: 'vxlan',
          when: overlay !== undefined,
          do: async () => {
            const o = overlay!;
            try {
              await createVxlan(this.#runner, { name: o.overlay.vxlan, vni: o.overlay.vni, port: this.#overlay.port, local: o.underlay.local, dev: o.underlay.dev, mtu, bridge, alias: networkAlias(id), learning: o.overlay.mode === 'static' });
            } catch (err) {
              await deleteLink(this.#runner, o.overlay.vxlan).catch(() => undefined);
              throw err;
            }
          },
          undo: async () => void (await deleteLink(this.#runner, overlay!.overlay.vxlan)),
        },
        {
          // Routing between the bridge and the uplink needs forwarding, as
          // dockerd also turns on. Left on when the network goes: it is a
          // host-wide switch other networks (and Docker) rely on.
          name: 'forwarding',
          when: !cfg.internal,
          do: async () => {
            if (ipv4.length > 0) await this.#ensureSysctl('net/ipv4/ip_forward', '1', log);
            if (ipv6.length > 0) await this.#ensureSysctl('net/ipv6/conf/all/forwarding', '1', log);
          },
        },
        {
          name: 'firewall',
          do: () => this.#firewall.addNetwork(firewallSpec(record)),
          undo: () => this.#firewall.removeNetwork(shortId(id), bridge),
        },
      ];
      steps.push({
        name: 'overlay-rules',
        when: overlay !== undefined,
        do: async () => {
          await this.#overlay.addGatewayGuard(record);
          await this.#overlay.syncRules(record);
        },
        undo: async () => {
          await this.#overlay.removeGatewayGuard(record);
          await this.#overlay.syncRules();
        },
      });
      const undo = await runSteps(steps, log);
      this.#store.state.networks[id] = record;
      const pool = poolId && overlay?.overlay.mode === 'cluster' ? this.#store.state.pools[poolId] : undefined;
      if (pool) pool.overlayNetwork = id;
      try {
        await this.#store.commit([['networks', id], ...(pool ? [['pools', pool.id]] : [])]);
      } catch (err) {
        delete this.#store.state.networks[id];
        if (pool) delete pool.overlayNetwork;
        await undo().catch(() => undefined);
        throw err;
      }
      if (overlay) this.#overlay.start(record);
      log.info({ bridge, subnets: prefixes.map(formatPrefix), internal: cfg.internal, adopted: adopt, mtu, vni: record.overlay?.vni }, 'network created');
      return {};
    });
  }

  async #ensureSysctl(key: string, value: string, log: Logger): Promise<void> {
    if ((await this.#runner.readSysctl(key)) === value) return;
    await this.#runner.writeSysctl(key, value);
    log.info({ sysctl: key, value }, 'sysctl changed');
  }

  async #defaultMtu(): Promise<number> {
    try {
      const route = await defaultRouteInfo(this.#runner, 4);
      if (route?.dev) {
        const uplink = await getLink(this.#runner, route.dev);
        if (uplink && uplink.mtu < 1500) return Math.max(uplink.mtu, 68);
      }
    } catch (err) {
      this.#log.debug({ err }, 'could not read the uplink MTU; using 1500');
    }
    return 1500;
  }

  async deleteNetwork(req: NetworkRequest, log: Logger): Promise<Record<string, never>> {
    const id = req.NetworkID;
    return this.#guard(id, async () => {
      const net = this.#store.state.networks[id];
      if (!net) {
        await this.#removeOrphanNetwork(id, log);
        return {};
      }
      const errors: unknown[] = [];
      const stale = Object.values(this.#store.state.endpoints).filter((e) => e.networkId === id);
      for (const ep of stale) {
        log.warn({ endpointId: ep.id }, 'deleting a stale endpoint along with its network');
        await this.#ports.unpublish(ep, log).catch((err) => errors.push(err));
        await deleteLink(this.#runner, ep.hostVeth).catch((err) => errors.push(err));
      }
      if (net.overlay) {
        await this.#overlay.stop(net, { leave: true });
        await this.#overlay.removeGatewayGuard(net).catch((err) => errors.push(err));
        await deleteLink(this.#runner, net.overlay.vxlan).catch((err) => errors.push(err));
      }
      await this.#firewall.removeNetwork(shortId(id), net.bridge).catch((err) => errors.push(err));
      if (net.createdBridge) await deleteLink(this.#runner, net.bridge).catch((err) => errors.push(err));
      else {
        const addrs = bridgeAddresses(net);
        await ipBatch(this.#runner, addrs.map((a) => ['addr', 'del', a, 'dev', net.bridge]), { force: true }).catch((err) => errors.push(err));
      }
      // dockerd forgets the network whatever we answer (protocol.md §1.5), so
      // the record goes too; anything left in the kernel carries our tag and
      // the next reconcile removes it.
      for (const ep of stale) delete this.#store.state.endpoints[ep.id];
      delete this.#store.state.networks[id];
      await this.#store.commit();
      if (net.overlay) await this.#overlay.syncRules().catch((err) => errors.push(err));
      if (errors.length > 0) {
        log.error({ errors: errors.map((e) => (e as Error).message) }, 'network deleted with cleanup errors; reconcile will retry');
      } else log.info({ bridge: net.bridge }, 'network deleted');
      return {};
    });
  }

  /** DeleteNetwork for an ID we have no record of: remove tagged leftovers, if any. */
  async #removeOrphanNetwork(id: string, log: Logger): Promise<void> {
    const name = bridgeName(id);
    const link = await getLink(this.#runner, name);
    if (link?.ifalias === networkAlias(id)) {
      await deleteLink(this.#runner, name);
      await this.#firewall.removeNetwork(shortId(id), name);
      log.info({ bridge: name }, 'removed leftover bridge of an unknown network');
    }
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
      const mac = givenMac !== '' ? givenMac.toLowerCase() : endpointMac(epId);
      const host = hostVethName(epId);
      const peer = peerVethName(epId);
      const undo = await runSteps(
        [
          {
            name: 'veth',
            do: async () => {
              const spec = { hostName: host, peerName: peer, peerMac: mac, mtu: net.mtu, bridge: net.bridge, alias: endpointAlias(epId), hairpin: true, isolated: false, disableIpv6: !addressV6 };
              try {
                await createVeth(this.#runner, spec);
              } catch (err) {
                if (!isExists(err)) {
                  await deleteLink(this.#runner, host).catch(() => undefined);
                  throw err;
                }
                // Checked only on a clash, to keep the common path to one process:
                // our own leftover for this endpoint is replaced, anything else is refused.
                const link = await getLink(this.#runner, host);
                if (link?.ifalias !== endpointAlias(epId)) {
                  throw new TsnetError('TSNET_ERR_ENDPOINT_EXISTS', `cannot create ${host}: a device with that name exists`);
                }
                await deleteLink(this.#runner, host);
                await createVeth(this.#runner, spec);
              }
            },
            undo: async () => void (await deleteLink(this.#runner, host)),
          },
        ],
        log,
      );
      const record: EndpointRecord = {
        id: epId,
        networkId: netId,
        hostVeth: host,
        peerVeth: peer,
        mac,
        macAssigned: givenMac === '',
        ...(address ? { address } : {}),
        ...(addressV6 ? { addressV6 } : {}),
        ports: [],
        createdAt: new Date().toISOString(),
      };
      this.#store.state.endpoints[epId] = record;
      try {
        await this.#store.commit([['endpoints', epId]]);
      } catch (err) {
        delete this.#store.state.endpoints[epId];
        await undo().catch(() => undefined);
        throw err;
      }
      if (net.overlay) await this.#overlay.publish(net, record);
      log.info({ hostVeth: host, address, addressV6, mac }, 'endpoint created');
      // Never echo a field dockerd filled in (protocol.md §2.6).
      return record.macAssigned ? { Interface: { MacAddress: mac } } : {};
    });
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
      const gw4 = !net.internal && net.gatewayMode !== 'isolated' && !net.inhibitIpv4 ? gatewayIp(net.ipv4[0]?.gateway) : undefined;
      const gw6 = !net.internal && net.gatewayMode !== 'isolated' ? gatewayIp(net.ipv6[0]?.gateway) : undefined;
      const res: Record<string, unknown> = {
        InterfaceName: { SrcName: ep.peerVeth, DstPrefix: net.ifacePrefix },
        // Without a gateway and without this flag dockerd would attach the
        // container to docker_gwbridge, giving an --internal network a way out.
        DisableGatewayService: gw4 === undefined && gw6 === undefined,
      };
      if (gw4) res.Gateway = gw4;
      if (gw6) res.GatewayIPv6 = gw6;
      log.debug({ srcName: ep.peerVeth, gateway: gw4 }, 'endpoint joined');
      return res;
    });
  }

  async leave(req: EndpointRequest, log: Logger): Promise<Record<string, never>> {
    return this.#guard(req.NetworkID, async () => {
      const ep = this.#store.state.endpoints[req.EndpointID];
      if (!ep) return {};
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
        const host = hostVethName(req.EndpointID);
        const link = await getLink(this.#runner, host);
        if (link?.ifalias === endpointAlias(req.EndpointID)) await deleteLink(this.#runner, host);
        return {};
      }
      await this.#ports.unpublish(ep, log);
      await this.#overlay.unpublish(this.#store.state.networks[ep.networkId], ep);
      await deleteLink(this.#runner, ep.hostVeth);
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
      if (holder && (await getLink(this.#runner, holder.hostVeth))) continue;
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
