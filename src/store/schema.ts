// The shape of what tsnet keeps on disk. Every record is validated on load:
// a store that parses but does not fit is treated like a corrupt one rather
// than half-trusted.
import { Type, type Static } from '@sinclair/typebox';

// 2: cluster-wide addressing moved from the overlay record into `cluster`
// (macvlan networks have it too), and pools name their `clusterNetwork`.
export const SCHEMA_VERSION = 2;

const Id = Type.String({ pattern: '^[0-9a-f]{64}$' });
const IfName = Type.String({ pattern: '^[A-Za-z0-9_.-]{1,15}$' });

export const PortBindingSchema = Type.Object({
  proto: Type.Union([Type.Literal('tcp'), Type.Literal('udp'), Type.Literal('sctp')]),
  containerPort: Type.Integer({ minimum: 1, maximum: 65535 }),
  hostIp: Type.String(),
  hostPort: Type.Integer({ minimum: 1, maximum: 65535 }),
});
export type PortBinding = Static<typeof PortBindingSchema>;

export const SubnetSchema = Type.Object({
  pool: Type.String(),
  /** gateway as CIDR with the pool's prefix length, as dockerd sent it; absent in isolated mode */
  gateway: Type.Optional(Type.String()),
  aux: Type.Record(Type.String(), Type.String()),
});
export type SubnetRecord = Static<typeof SubnetSchema>;

export const OverlaySchema = Type.Object({
  /** cluster: etcd control plane; static: a fixed peer list, no control plane */
  mode: Type.Union([Type.Literal('cluster'), Type.Literal('static')]),
  vni: Type.Integer({ minimum: 1, maximum: 16777215 }),
  vxlan: IfName,
  subnet: Type.String(),
  peers: Type.Array(Type.String()),
  local: Type.String(),
  underlay: IfName,
  /** tsnet.encrypt: VXLAN between hosts runs inside WireGuard (absent in older records: false) */
  encrypted: Type.Optional(Type.Boolean()),
  /** static peers' WireGuard public keys, by underlay address */
  peerKeys: Type.Optional(Type.Record(Type.String(), Type.String())),
  /** auto: member hosts on this host's LAN are reached by direct routes, the others over VXLAN; absent: VXLAN to all */
  backend: Type.Optional(Type.Union([Type.Literal('vxlan'), Type.Literal('auto')])),
});
export type OverlayRecord = Static<typeof OverlaySchema>;

/** One pool of a cluster network: its dynamic range, and what this host holds of it. */
export const ClusterPoolSchema = Type.Object({
  /** the IPAM pool whose endpoint addresses are allocated cluster-wide */
  poolId: Type.String(),
  /** dynamic range blocks are carved from (SubPool, else the pool); agreed cluster-wide */
  range: Type.String(),
  /** address blocks this host leased (keys as in etcd) */
  blocks: Type.Array(Type.String()),
  /** static addresses this host claimed outside its own blocks */
  claims: Type.Array(Type.String()),
});
export type ClusterPoolRecord = Static<typeof ClusterPoolSchema>;

/**
 * A network whose endpoint addresses are unique across the cluster (etcd):
 * each host leases blocks of each pool's range and hands out their addresses
 * itself. Blocks and claims of both families live under the one key.
 */
export const ClusterSchema = Type.Object({
  /** the network's key in etcd: its first subnet, which every host names alike */
  subnet: Type.String(),
  pools: Type.Array(ClusterPoolSchema),
});
export type ClusterRecord = Static<typeof ClusterSchema>;

/** macvlan and ipvlan networks: containers are children of a parent link on the LAN */
export const LanSchema = Type.Object({
  kind: Type.Union([Type.Literal('macvlan'), Type.Literal('ipvlan')]),
  /** the parent link (also the network's `bridge`): the user's, an 802.1q sub-interface, or tsnet's own isolated one */
  parent: IfName,
  /** tsnet created the parent and deletes it with the network */
  createdParent: Type.Boolean(),
  /** an isolated parent's other, unused end */
  parentPeer: Type.Optional(IfName),
  /** 802.1q id when tsnet made the parent as a VLAN sub-interface */
  vlan: Type.Optional(Type.Integer({ minimum: 1, maximum: 4094 })),
  /** macvlan_mode or ipvlan_mode */
  mode: Type.String(),
  /** ipvlan_flag */
  flag: Type.Optional(Type.String()),
  /** the host's own child on the parent (tsnet.host_access=true) */
  shim: Type.Optional(IfName),
  /** the parent's ifindex when last seen: a new one means the parent was re-created, taking the containers' children with it */
  parentIndex: Type.Optional(Type.Integer({ minimum: 1 })),
});
export type LanRecord = Static<typeof LanSchema>;

/** One static peer of a routed network: a host's LAN address and the block of the subnet it serves. */
export const RoutedPeerSchema = Type.Object({
  address: Type.String(),
  block: Type.String(),
});
export type RoutedPeerRecord = Static<typeof RoutedPeerSchema>;

/** tsnet.mode=routed: containers on a local bridge, other hosts' blocks routed through their LAN addresses */
export const RoutedSchema = Type.Object({
  /** cluster: blocks and hosts from etcd; static: the tsnet.peers list, no etcd */
  mode: Type.Union([Type.Literal('cluster'), Type.Literal('static')]),
  /** static mode's peers (this host's own entry left out) */
  peers: Type.Array(RoutedPeerSchema),
});
export type RoutedRecord = Static<typeof RoutedSchema>;

const GatewayModeSchema = Type.Union([Type.Literal('nat'), Type.Literal('nat-unprotected'), Type.Literal('routed'), Type.Literal('isolated')]);

export const NetworkSchema = Type.Object({
  id: Id,
  mode: Type.Union([Type.Literal('bridge'), Type.Literal('overlay'), Type.Literal('macvlan'), Type.Literal('ipvlan'), Type.Literal('routed')]),
  bridge: IfName,
  /** tsnet made the bridge (and deletes it); false when it adopted an existing one */
  createdBridge: Type.Boolean(),
  ipv4: Type.Array(SubnetSchema),
  ipv6: Type.Array(SubnetSchema),
  internal: Type.Boolean(),
  mtu: Type.Integer({ minimum: 68, maximum: 65535 }),
  masquerade: Type.Boolean(),
  icc: Type.Boolean(),
  gatewayMode: GatewayModeSchema,
  /** absent in records written before it existed: nat */
  gatewayModeIpv6: Type.Optional(GatewayModeSchema),
  hostBindingIpv4: Type.String(),
  /** the bridge gets no IPv4 gateway address (com.docker.network.bridge.inhibit_ipv4) */
  inhibitIpv4: Type.Boolean(),
  /** prefix of the interface name inside containers (eth -> eth0, eth1 …) */
  ifacePrefix: Type.String({ pattern: '^[A-Za-z][A-Za-z0-9_-]{0,10}$' }),
  trustedHostInterfaces: Type.Array(IfName),
  /** present for tsnet.mode=overlay */
  overlay: Type.Optional(OverlaySchema),
  /** present for tsnet.mode=macvlan and ipvlan */
  lan: Type.Optional(LanSchema),
  /** present for tsnet.mode=routed */
  routed: Type.Optional(RoutedSchema),
  /** present when the network's addresses are allocated cluster-wide */
  cluster: Type.Optional(ClusterSchema),
  /** the -o map as dockerd sent it, for inspection and re-validation */
  options: Type.Record(Type.String(), Type.String()),
  createdAt: Type.String(),
});
export type NetworkRecord = Static<typeof NetworkSchema>;

export const EndpointDnsSchema = Type.Object({
  container: Id,
  /** the container's name, also first in names */
  name: Type.String(),
  /** lower case: name, aliases (and from API 1.44 what DNSNames adds: short ID, hostname) */
  names: Type.Array(Type.String()),
  /** the network's name on this host, for NAME.NETWORK queries */
  network: Type.String(),
});
export type EndpointDns = Static<typeof EndpointDnsSchema>;

export const EndpointSchema = Type.Object({
  id: Id,
  networkId: Id,
  hostVeth: IfName,
  peerVeth: IfName,
  mac: Type.String({ pattern: '^([0-9a-f]{2}:){5}[0-9a-f]{2}$' }),
  /** tsnet chose the MAC (and told dockerd) rather than dockerd giving one */
  macAssigned: Type.Boolean(),
  address: Type.Optional(Type.String()),
  addressV6: Type.Optional(Type.String()),
  ports: Type.Array(PortBindingSchema),
  sandboxKey: Type.Optional(Type.String()),
  /**
   * The container's names on this network, learned from the Engine API
   * (dockerd never tells a driver): answered by tsnet's DNS and published
   * with the endpoint in etcd. Kept here so a restarted tsnet has them
   * before dockerd answers.
   */
  dns: Type.Optional(EndpointDnsSchema),
  createdAt: Type.String(),
});
export type EndpointRecord = Static<typeof EndpointSchema>;

export const AllocationSchema = Type.Object({
  kind: Type.Union([Type.Literal('gateway'), Type.Literal('static'), Type.Literal('dynamic')]),
  name: Type.Optional(Type.String()),
  at: Type.String(),
});
export type Allocation = Static<typeof AllocationSchema>;

export const PoolSchema = Type.Object({
  id: Type.String(),
  addressSpace: Type.String(),
  pool: Type.String(),
  subPool: Type.Optional(Type.String()),
  v6: Type.Boolean(),
  /** chosen by tsnet from the default pools rather than asked for with --subnet */
  dynamic: Type.Boolean(),
  /** set when a network with cluster-wide addressing uses this pool: its endpoint addresses are allocated through etcd */
  clusterNetwork: Type.Optional(Type.String()),
  options: Type.Record(Type.String(), Type.String()),
  allocations: Type.Record(Type.String(), AllocationSchema),
  createdAt: Type.String(),
});
export type PoolRecord = Static<typeof PoolSchema>;

export const StateSchema = Type.Object({
  networks: Type.Record(Type.String(), NetworkSchema),
  endpoints: Type.Record(Type.String(), EndpointSchema),
  pools: Type.Record(Type.String(), PoolSchema),
});
export type State = Static<typeof StateSchema>;

export const FileSchema = Type.Object({
  schemaVersion: Type.Integer(),
  generation: Type.Integer({ minimum: 0 }),
  writtenAt: Type.String(),
  checksum: Type.String(),
  state: Type.Unknown(),
});

export function emptyState(): State {
  return { networks: {}, endpoints: {}, pools: {} };
}
