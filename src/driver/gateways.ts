// Which gateways a network does without. One rule for both places dockerd
// asks: GwAllocCheck (dockerd 28+, before IPAM, so no address is reserved
// for a gateway that will never exist) and CreateNetwork (every version:
// dockerd before 28 never asks, and its IPAM always allocates a gateway,
// which CreateNetwork must then leave unused).
import type { NetworkConfig } from './options.js';

export interface GatewaySkips {
  v4: boolean;
  v6: boolean;
}

export function gatewaySkips(cfg: Pick<NetworkConfig, 'gatewayMode' | 'gatewayModeIpv6' | 'inhibitIpv4' | 'internal'>): GatewaySkips {
  // tsnet's isolated IPv4 mode leaves the bridge with no address at all
  // (README), so it drops both families; the rest is Docker's bridge rule:
  // an --internal network with inhibit_ipv4 has no route that could use one.
  const all = cfg.gatewayMode === 'isolated';
  return { v4: all || (cfg.inhibitIpv4 && cfg.internal), v6: all || cfg.gatewayModeIpv6 === 'isolated' };
}
