// Deterministic, tagged names for everything tsnet creates. A name is a
// prefix plus a hash of the Docker ID, so a restarted tsnet (or an operator)
// can tell tsnet's objects apart from everything else, and recomputes the
// same name for the same network or endpoint.
import { createHash } from 'node:crypto';
import { TsnetError, quote } from '../errors.js';

export const IFNAME_MAX = 15;
/** Linux accepts more, but anything outside this set is a quoting hazard in ip -batch and nft. */
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
export const DOCKER_ID = /^[0-9a-f]{64}$/;

export const PREFIX = {
  bridge: 'tsbr-',
  hostVeth: 'tsv',
  peerVeth: 'tsc',
  vxlan: 'tsvx-',
  overlayNetns: 'tsov-',
  gatewayHost: 'tsgh-',
  gatewayPort: 'tsgp-',
  lanParent: 'tsmv-',
  lanPeer: 'tsmp-',
  shim: 'tsmh-',
  probe: 'tsmx-',
} as const;

/** Tag written to IFLA_IFALIAS of every link tsnet creates. */
export const ALIAS_PREFIX = 'tsnet:';

function shortHash(id: string, len: number): string {
  return createHash('sha256').update(id).digest('hex').slice(0, len);
}

export function isValidIfName(name: string): boolean {
  return typeof name === 'string' && IFNAME.test(name) && name !== '.' && name !== '..';
}

export function assertIfName(name: string, what: string): string {
  if (!isValidIfName(name)) {
    throw new TsnetError(
      'TSNET_ERR_INVALID_OPTION',
      `${what}: invalid interface name ${quote(name)}: use 1-${IFNAME_MAX} characters from A-Z a-z 0-9 _ . -`,
    );
  }
  return name;
}

export function bridgeName(networkId: string): string {
  return `${PREFIX.bridge}${shortHash(networkId, 10)}`;
}

export function vxlanName(networkId: string): string {
  return `${PREFIX.vxlan}${shortHash(networkId, 10)}`;
}

/**
 * An overlay network's switching half: the network namespace holding its
 * bridge, VXLAN port and endpoints' veths, and the veth pair joining that
 * bridge to the gateway's bridge in the host namespace.
 */
export function overlayNames(networkId: string): { netns: string; gatewayHost: string; gatewayPort: string } {
  const h = shortHash(networkId, 10);
  return { netns: `${PREFIX.overlayNetns}${h}`, gatewayHost: `${PREFIX.gatewayHost}${h}`, gatewayPort: `${PREFIX.gatewayPort}${h}` };
}

/** tsnet's overlay namespaces are named tsov- and 10 hex digits, and nothing else is. */
export const OVERLAY_NETNS = /^tsov-[0-9a-f]{10}$/;

/** A macvlan/ipvlan network's own devices: isolated parent, its unused end, host shim, kernel probe. */
export function lanNames(networkId: string): { parent: string; peer: string; shim: string; probe: string } {
  const h = shortHash(networkId, 10);
  return { parent: `${PREFIX.lanParent}${h}`, peer: `${PREFIX.lanPeer}${h}`, shim: `${PREFIX.shim}${h}`, probe: `${PREFIX.probe}${h}` };
}

export function hostVethName(endpointId: string): string {
  return `${PREFIX.hostVeth}${endpointId.slice(0, 11)}`;
}

export function peerVethName(endpointId: string): string {
  return `${PREFIX.peerVeth}${endpointId.slice(0, 11)}`;
}

export function networkAlias(networkId: string): string {
  return `${ALIAS_PREFIX}net:${networkId}`;
}

export function endpointAlias(endpointId: string): string {
  return `${ALIAS_PREFIX}ep:${endpointId}`;
}

/**
 * A container's MAC when dockerd gives none: derived from its address in the
 * network, so a container that comes back with the same address (docker
 * restart, a restart policy) has the same MAC, and the ARP caches of its
 * peers (on other hosts too, where dockerd before 28 sends no gratuitous
 * ARP) stay right; from the endpoint ID when it has no address.
 */
export function containerMac(networkId: string, address: string | undefined, endpointId: string): string {
  return endpointMac(address ? `addr:${networkId}:${address.split('/')[0]}` : endpointId);
}

/** A locally administered unicast MAC derived from a seed (an endpoint ID): stable across repairs. */
export function endpointMac(endpointId: string): string {
  const h = createHash('sha256').update(`mac:${endpointId}`).digest();
  const bytes = [0x02, h[0]!, h[1]!, h[2]!, h[3]!, h[4]!];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/**
 * The bridge's MAC, which is the gateway's. An overlay's gateway is the same
 * on every host (a distributed gateway), so its MAC comes from the subnet,
 * which all hosts share, not from the network ID, which each host's dockerd
 * makes up.
 */
export function bridgeMac(net: { id: string; overlay?: { subnet: string } | undefined }): string {
  return endpointMac(net.overlay ? `gateway:${net.overlay.subnet}` : `bridge:${net.id}`);
}

/** Short form of a Docker ID for rule comments and chain names. */
export function shortId(id: string): string {
  return id.slice(0, 12);
}
