// Network options: Docker's bridge-driver keys (so a user switching from
// `-d bridge` keeps their `-o` flags) and tsnet's own `tsnet.*` keys. Every
// value is checked here, before anything touches the kernel, and an error
// names the option and the value. Unknown `tsnet.*` keys are refused (a typo
// must not silently give a different network); unknown keys of other
// namespaces are kept and ignored, as Docker's bridge driver does.
import { TsnetError, quote } from '../errors.js';
import { parseIp, parsePrefix } from '../net/cidr.js';
import { parsePublicKey } from '../wireguard/keys.js';
import { assertIfName } from '../kernel/names.js';
import type { ModeName } from './modes/mode.js';
import { OPT, parseBool } from './opt.js';
import { DEFAULT_MODE, MODE_NAMES, MODE_OPTIONS, isModeName, modesTaking } from './modes/registry.js';

export { OPT, parseBool };

const TSNET_KEYS = new Set<string>([OPT.mode, ...MODE_OPTIONS]);

export type GatewayMode = 'nat' | 'nat-unprotected' | 'routed' | 'isolated';

export interface NetworkConfig {
  mode: ModeName;
  bridgeName: string | undefined;
  masquerade: boolean;
  icc: boolean;
  hostBindingIpv4: string;
  gatewayMode: GatewayMode;
  gatewayModeIpv6: GatewayMode;
  inhibitIpv4: boolean;
  mtu: number | undefined;
  ifacePrefix: string;
  trustedHostInterfaces: string[];
  vni: number | undefined;
  /** tsnet.peers entries: ADDR (overlay) or ADDR=BLOCK (routed) */
  peers: string[] | undefined;
  /** WireGuard public keys of static peers (tsnet.peers=ADDR=KEY), by address */
  peerKeys: Record<string, string> | undefined;
  /** tsnet.encrypt: the overlay's traffic between hosts goes through WireGuard */
  encrypt: boolean;
  internal: boolean;
  enableIpv4: boolean;
  enableIpv6: boolean;
  /** the generic map as strings, for the record */
  generic: Record<string, string>;
}


export function parseIntRange(key: string, value: string, min: number, max: number): number {
  if (!/^\d{1,10}$/.test(value)) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${key}: ${quote(value)} is not a whole number`);
  const n = Number(value);
  if (n < min || n > max) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${key}: ${n} is out of range ${min}…${max}`);
  return n;
}

/** The generic option map may carry non-strings when a client uses the API directly. */
export function stringifyGeneric(generic: unknown): Record<string, string> {
  if (generic === undefined || generic === null) return {};
  if (typeof generic !== 'object' || Array.isArray(generic)) {
    throw new TsnetError('TSNET_ERR_INVALID_OPTION', `Options["com.docker.network.generic"]: expected an object, got ${quote(generic)}`);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(generic as Record<string, unknown>)) {
    if (k.length > 256) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `option name too long: ${quote(k)}`);
    if (typeof v === 'string') out[k] = v;
    else if (typeof v === 'number' || typeof v === 'boolean') out[k] = String(v);
    else throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${k}: expected a string value, got ${quote(v)}`);
    if (out[k]!.length > 4096) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${k}: value too long`);
  }
  return out;
}

function optBool(options: Record<string, unknown>, key: string, dflt: boolean): boolean {
  const v = options[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string') return parseBool(key, v);
  throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${key}: expected a boolean, got ${quote(v)}`);
}

export function parseNetworkOptions(options: Record<string, unknown> | null | undefined): NetworkConfig {
  const top = options ?? {};
  const g = stringifyGeneric(top['com.docker.network.generic']);
  for (const k of Object.keys(g)) {
    if (k.startsWith('tsnet.') && !TSNET_KEYS.has(k)) {
      throw new TsnetError('TSNET_ERR_INVALID_OPTION', `unknown tsnet option ${quote(k)} (known: ${[...TSNET_KEYS].join(', ')})`);
    }
  }
  const internal = optBool(top, 'com.docker.network.internal', false) || (g['com.docker.network.internal'] ? parseBool('com.docker.network.internal', g['com.docker.network.internal']) : false);
  const enableIpv4 = optBool(top, 'com.docker.network.enable_ipv4', true);
  const enableIpv6 = optBool(top, 'com.docker.network.enable_ipv6', false);

  const mode = g[OPT.mode] ?? DEFAULT_MODE;
  if (!isModeName(mode)) {
    throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.mode}: ${quote(mode)} is not a mode (use ${MODE_NAMES.join(' or ')})`);
  }
  const bridgeName = g[OPT.bridgeName] !== undefined ? assertIfName(g[OPT.bridgeName]!, OPT.bridgeName) : undefined;
  if (g[OPT.defaultBridge] !== undefined && parseBool(OPT.defaultBridge, g[OPT.defaultBridge]!)) {
    throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.defaultBridge}: tsnet does not replace Docker's default bridge`);
  }
  const masquerade = g[OPT.masquerade] !== undefined ? parseBool(OPT.masquerade, g[OPT.masquerade]!) : true;
  const icc = g[OPT.icc] !== undefined ? parseBool(OPT.icc, g[OPT.icc]!) : true;
  const inhibitIpv4 = g[OPT.inhibitIpv4] !== undefined ? parseBool(OPT.inhibitIpv4, g[OPT.inhibitIpv4]!) : false;

  let hostBindingIpv4 = '0.0.0.0';
  if (g[OPT.hostBindingIpv4] !== undefined) {
    const ip = parseIp(g[OPT.hostBindingIpv4]!);
    if (!ip) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.hostBindingIpv4}: ${quote(g[OPT.hostBindingIpv4])} is not an IP address`);
    hostBindingIpv4 = g[OPT.hostBindingIpv4]!;
  }

  const gatewayMode = (g[OPT.gatewayModeIpv4] ?? 'nat') as GatewayMode;
  if (!['nat', 'nat-unprotected', 'routed', 'isolated'].includes(gatewayMode)) {
    throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.gatewayModeIpv4}: ${quote(gatewayMode)} is not a gateway mode (nat, nat-unprotected, routed, isolated)`);
  }
  if (gatewayMode === 'isolated' && !internal) {
    throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.gatewayModeIpv4}: isolated gateway mode needs an --internal network`);
  }
  const gatewayMode6 = g[OPT.gatewayModeIpv6] ?? 'nat';
  if (!['nat', 'nat-unprotected', 'routed', 'isolated'].includes(gatewayMode6)) {
    throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.gatewayModeIpv6}: ${quote(gatewayMode6)} is not a gateway mode (nat, nat-unprotected, routed, isolated)`);
  }
  if (gatewayMode6 === 'isolated' && !internal) {
    throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.gatewayModeIpv6}: isolated gateway mode needs an --internal network`);
  }

  const mtu = g[OPT.mtu] !== undefined && g[OPT.mtu] !== '' && g[OPT.mtu] !== '0' ? parseIntRange(OPT.mtu, g[OPT.mtu]!, 68, 65535) : undefined;

  const ifacePrefix = g[OPT.ifacePrefix] ?? 'eth';
  if (!/^[A-Za-z][A-Za-z0-9_-]{0,10}$/.test(ifacePrefix)) {
    throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.ifacePrefix}: ${quote(ifacePrefix)} must be 1-11 letters, digits, _ or -, starting with a letter`);
  }

  const trustedHostInterfaces = (g[OPT.trustedHostInterfaces] ?? '')
    .split(':')
    .filter((s) => s !== '')
    .map((s) => assertIfName(s, OPT.trustedHostInterfaces));

  let vni: number | undefined;
  let peers: string[] | undefined;
  if (g[OPT.vni] !== undefined) vni = parseIntRange(OPT.vni, g[OPT.vni]!, 1, 16777215);
  const encrypt = g[OPT.encrypt] !== undefined ? parseBool(OPT.encrypt, g[OPT.encrypt]!) : false;
  let peerKeys: Record<string, string> | undefined;
  if (g[OPT.peers] !== undefined) {
    const entries = g[OPT.peers]!.split(',').map((s) => s.trim()).filter((s) => s !== '');
    peers = [];
    for (const entry of entries) {
      // ADDR, ADDR=BLOCK for routed networks, or ADDR=PUBKEY for encrypted
      // overlays (base64 keys end in '=' too: split at the first).
      const eq = entry.indexOf('=');
      const p = (eq < 0 ? entry : entry.slice(0, eq)).trim();
      if (!parseIp(p)) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.peers}: ${quote(p)} is not an IP address`);
      if (eq >= 0 && parsePrefix(entry.slice(eq + 1).trim(), false)) {
        // A block: the routed mode checks it against the subnet (an overlay refuses it).
        peers.push(entry);
        continue;
      }
      if (eq >= 0) {
        if (!encrypt) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.peers}: ${quote(entry)} names a WireGuard key, which only an encrypted overlay uses (${OPT.encrypt}=true)`);
        (peerKeys ??= {})[p] = parsePublicKey(entry.slice(eq + 1), `${OPT.peers} (${p})`);
      }
      peers.push(p);
    }
    if (peers.length === 0) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.peers}: the list is empty`);
  }
  for (const key of MODE_OPTIONS) {
    const takers = modesTaking(key);
    if (g[key] !== undefined && !takers.includes(mode)) {
      throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${key} only applies with ${takers.map((m) => `${OPT.mode}=${m}`).join(' or ')}`);
    }
  }

  return {
    mode,
    bridgeName,
    masquerade,
    icc,
    hostBindingIpv4,
    gatewayMode,
    gatewayModeIpv6: gatewayMode6 as GatewayMode,
    inhibitIpv4,
    mtu,
    ifacePrefix,
    trustedHostInterfaces,
    vni,
    peers,
    peerKeys,
    encrypt,
    internal,
    enableIpv4,
    enableIpv6,
    generic: g,
  };
}
