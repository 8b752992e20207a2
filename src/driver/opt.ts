// Option names and Go's boolean spellings, apart from options.ts so that
// mode modules (which options.ts reaches through the registry) can use them
// without an import cycle.
import { TsnetError, quote } from '../errors.js';

export const OPT = {
  bridgeName: 'com.docker.network.bridge.name',
  masquerade: 'com.docker.network.bridge.enable_ip_masquerade',
  icc: 'com.docker.network.bridge.enable_icc',
  hostBindingIpv4: 'com.docker.network.bridge.host_binding_ipv4',
  gatewayModeIpv4: 'com.docker.network.bridge.gateway_mode_ipv4',
  gatewayModeIpv6: 'com.docker.network.bridge.gateway_mode_ipv6',
  inhibitIpv4: 'com.docker.network.bridge.inhibit_ipv4',
  defaultBridge: 'com.docker.network.bridge.default_bridge',
  trustedHostInterfaces: 'com.docker.network.bridge.trusted_host_interfaces',
  mtu: 'com.docker.network.driver.mtu',
  ifacePrefix: 'com.docker.network.container_iface_prefix',
  mode: 'tsnet.mode',
  vni: 'tsnet.vni',
  peers: 'tsnet.peers',
  encrypt: 'tsnet.encrypt',
  backend: 'tsnet.backend',
} as const;

const TRUE = new Set(['1', 't', 'T', 'TRUE', 'true', 'True']);
const FALSE = new Set(['0', 'f', 'F', 'FALSE', 'false', 'False']);

/** Go's strconv.ParseBool, which is what Docker's bridge driver accepts. */
export function parseBool(key: string, value: string): boolean {
  if (TRUE.has(value)) return true;
  if (FALSE.has(value)) return false;
  throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${key}: invalid boolean ${quote(value)} (use true or false)`);
}
