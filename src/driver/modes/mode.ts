// What a network mode is to the driver core. The core (driver.ts) owns what
// every mode shares: the network's lock, parsing and validation order,
// overlap checks, running the steps with undo, and persisting the records
// last. A mode knows only its own kernel objects: which devices make a
// network and an endpoint, how to take them down, and how to put them back
// when the kernel drifted. Modes are chosen once, from tsnet.mode, in
// registry.ts; nothing else branches on the mode.
import type { Logger } from 'pino';
import type { CreateNetworkRequest } from '../../api/types.js';
import type { Firewall, FirewallNetwork } from '../../firewall/firewall.js';
import type { LinkInfo } from '../../kernel/ip.js';
import type { Runner } from '../../kernel/exec.js';
import type { ClusterNetworks } from '../../cluster/networks.js';
import type { OverlayManager } from '../../overlay/manager.js';
import type { RoutedManager } from '../../routed/manager.js';
import type { Store, StorePath } from '../../store/store.js';
import type { EndpointRecord, NetworkRecord, SubnetRecord } from '../../store/schema.js';
import type { NetworkConfig } from '../options.js';
import type { ReconcileReport } from '../reconcile.js';
import type { Step } from '../steps.js';

export type ModeName = NetworkRecord['mode'];

/**
 * A Join answer: the container's interface and its gateways (plain IPs).
 * Without a gateway and without DisableGatewayService dockerd would attach
 * the container to docker_gwbridge, giving an --internal network a way out.
 */
export function joinAnswer(net: NetworkRecord, ep: EndpointRecord, gw4: string | undefined, gw6: string | undefined): Record<string, unknown> {
  const res: Record<string, unknown> = {
    InterfaceName: { SrcName: ep.peerVeth, DstPrefix: net.ifacePrefix },
    DisableGatewayService: gw4 === undefined && gw6 === undefined,
  };
  if (gw4) res.Gateway = gw4;
  if (gw6) res.GatewayIPv6 = gw6;
  return res;
}

/** The record fields every mode takes from the options as they are. */
export function settingsOf(cfg: NetworkConfig, mtu: number): Omit<NetworkRecord, 'id' | 'mode' | 'bridge' | 'createdBridge' | 'ipv4' | 'ipv6' | 'overlay' | 'lan' | 'cluster' | 'routed'> {
  return {
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
}

/** What modes are built from: the host's kernel, firewall and cluster state. */
export interface ModeDeps {
  runner: Runner;
  store: Store;
  firewall: Firewall;
  overlay: OverlayManager;
  /** routes to other hosts' blocks (routed networks, overlays with backend=auto) */
  routed: RoutedManager;
  /** networks spanning hosts through etcd: agreement, cluster-wide addresses, the watch */
  cluster: ClusterNetworks;
  log: Logger;
  /** where the host's /run is seen from here (config hostRun): containers' namespaces are opened through it */
  hostRun?: string | undefined;
}

export interface NetworkDraft {
  id: string;
  /** deviceName's answer, checked unused by other networks */
  device: string;
  req: CreateNetworkRequest;
  cfg: NetworkConfig;
  ipv4: SubnetRecord[];
  ipv6: SubnetRecord[];
  /** every other network tsnet holds */
  others: NetworkRecord[];
  log: Logger;
}

/** A network ready to be made: checked, with nothing changed yet. */
export interface NetworkPlan {
  record: NetworkRecord;
  /** the kernel changes, in order, each with its undo */
  steps: Step[];
  /** bookkeeping outside the network's record written in the same commit */
  beforeCommit?(): StorePath[];
  /** takes beforeCommit back when the commit fails */
  revertCommit?(): void;
  /** after the record is durable: start whatever keeps the network alive */
  activate?(): void;
  /** what the "network created" log line adds */
  logFields: Record<string, unknown>;
}

export interface EndpointPlan {
  /** the endpoint's device in the host namespace (for LAN children, the one handed to dockerd) */
  hostVeth: string;
  /** the device dockerd moves into the container */
  peerVeth: string;
  steps: Step[];
  /** the interface's MAC when the mode, not tsnet's choice, decides it (ipvlan: the parent's); never told to dockerd */
  fixedMac?: string;
}

export interface EndpointDraft {
  id: string;
  net: NetworkRecord;
  mac: string;
  address: string | undefined;
  addressV6: string | undefined;
}

/** Where an endpoint's device is, as reconcile sees the host's links. */
export type EndpointPresence = 'host' | 'container' | 'gone';

/** State shared by one reconcile run. */
export interface ReconcileRun {
  links: Map<string, LinkInfo>;
  report: ReconcileReport;
  log: Logger;
  /** the store must be written at the end */
  markChanged(): void;
  /** once per run, whichever network asks first (for example the underlay) */
  once<T>(key: string, fn: () => Promise<T>): Promise<T>;
}

export interface NetworkMode {
  readonly name: ModeName;
  /** what deviceName names, for errors: a bridge, or a parent link */
  readonly deviceKind: 'bridge' | 'parent';
  /** published ports (-p) make sense: containers sit behind the host's addresses */
  readonly publishesPorts: boolean;
  /** the device endpoints attach to, recorded as the network's `bridge`; no two networks share one */
  deviceName(id: string, cfg: NetworkConfig): string;
  /** checks that need only the request; run before the lock is taken */
  validate(cfg: NetworkConfig, ipv4: SubnetRecord[], ipv6: SubnetRecord[]): void;
  /** every check that reads the kernel or the cluster, and the steps; changes nothing */
  planNetwork(draft: NetworkDraft): Promise<NetworkPlan>;
  /** take the network's devices and rules down; returns the errors met, never throws for missing things */
  deleteNetwork(net: NetworkRecord, log: Logger): Promise<unknown[]>;
  /** after the network's record is gone from the store */
  afterDelete?(net: NetworkRecord): Promise<void>;
  /** tsnet-tagged leftovers of a network it has no record of (an interrupted create) */
  removeOrphanNetwork?(id: string, log: Logger): Promise<void>;

  planEndpoint(draft: EndpointDraft): Promise<EndpointPlan>;
  /** after the endpoint's record is durable */
  endpointCreated?(net: NetworkRecord, ep: EndpointRecord): Promise<void>;
  /** take the endpoint's devices down (its published ports are the core's) */
  deleteEndpoint(net: NetworkRecord | undefined, ep: EndpointRecord): Promise<void>;
  /** the endpoint's devices are still there (its container has not vanished under it) */
  endpointAlive(ep: EndpointRecord): Promise<boolean>;
  /** tsnet-tagged leftovers of an endpoint it has no record of */
  removeOrphanEndpoint?(id: string): Promise<void>;

  /** the Join answer's mode-specific part: interface, gateways */
  join(net: NetworkRecord, ep: EndpointRecord): Record<string, unknown>;
  leave?(net: NetworkRecord | undefined, ep: EndpointRecord, log: Logger): Promise<void>;

  /** the firewall's view of the network; none for networks whose traffic never crosses the host's forwarding */
  firewall(net: NetworkRecord): FirewallNetwork | undefined;
  /** put the network's devices back as the record says */
  reconcileNetwork(net: NetworkRecord, run: ReconcileRun): Promise<void>;
  endpointPresence(net: NetworkRecord, ep: EndpointRecord, links: Map<string, LinkInfo>): EndpointPresence;
  /** `ip -batch` lines that put an endpoint's host side back in place */
  reconcileEndpoint(net: NetworkRecord, ep: EndpointRecord, link: LinkInfo): Array<readonly (string | number)[]>;
  /** host-wide state of the mode, once per reconcile, whether or not networks of it exist */
  reconcileHost?(run: ReconcileRun): Promise<void>;

  /** what `tsnetctl status` shows for the network beyond the common fields */
  status(net: NetworkRecord): Record<string, unknown>;
}
