// The host's WireGuard interface, made by the kernel where it has the
// module, else by wireguard-go over TUN (what wg-quick does). Design notes:
// - Which one is decided by trying: `ip link add … type wireguard` either
//   works or fails with "Unknown device type"; then `wireguard-go NAME`
//   creates the TUN device, listens on its UAPI socket
//   (/run/wireguard/NAME.sock) and detaches, so the Runner sees it return
//   once the device exists, and the daemon outlives tsnet: a restarted
//   tsnet finds the device (and its sessions) where it left them.
// - Either way it is configured with the same `wg syncconf` text
//   (config.ts); `wg` talks netlink to the kernel's device and the UAPI
//   socket to wireguard-go's.
// - A TUN device whose daemon is gone (no UAPI answer) carries nothing; it
//   is deleted and made again. Deleting the link also ends wireguard-go.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { TsnetError } from '../errors.js';
import { CommandError, ifSysctl, type Runner } from '../kernel/exec.js';
import { deleteLink, getLink, ipBatch, listAddrs, ownAddrLine } from '../kernel/ip.js';
import { parseDump, renderConfig, type DeviceState, type WgConfig } from './config.js';

export type Implementation = 'kernel' | 'wireguard-go';

export interface DeviceSpec {
  name: string;
  mtu: number;
  alias: string;
  /** the tunnel address with the tunnel prefix's length (its route through the device comes with it) */
  address: string;
  /** kernel or wireguard-go; auto tries the kernel first */
  prefer?: Implementation | 'auto';
}

export interface DeviceInfo {
  implementation: Implementation;
  /** made now rather than found */
  created: boolean;
}

function unknownType(err: unknown): boolean {
  return err instanceof CommandError && /Unknown device type|Operation not supported|not supported/i.test(err.stderr);
}

/** Does wireguard-go (or the kernel) answer for this device? */
async function answers(runner: Runner, name: string): Promise<boolean> {
  try {
    await runner.run('wg', ['show', name, 'listen-port']);
    return true;
  } catch {
    return false;
  }
}

/** The kernel's WireGuard, or wireguard-go's TUN device, or neither. */
export async function findDevice(runner: Runner, name: string): Promise<Implementation | undefined> {
  const link = await getLink(runner, name);
  const kind = link?.linkinfo?.info_kind;
  if (!link) return undefined;
  if (kind === 'wireguard') return 'kernel';
  if (kind === 'tun') return 'wireguard-go';
  throw new TsnetError('TSNET_ERR_BRIDGE_IN_USE', `${name} exists and is a ${kind ?? 'non-WireGuard'} device, not tsnet's WireGuard interface`);
}

async function create(runner: Runner, name: string, prefer: Implementation | 'auto'): Promise<Implementation> {
  if (prefer !== 'wireguard-go') {
    try {
      await runner.run('ip', ['link', 'add', 'name', name, 'type', 'wireguard']);
      return 'kernel';
    } catch (err) {
      if (prefer === 'kernel' || !unknownType(err)) throw err;
    }
  }
  try {
    await runner.run('wireguard-go', [name]);
  } catch (err) {
    throw new TsnetError('TSNET_ERR_UNSUPPORTED', `this kernel has no WireGuard module and wireguard-go could not make ${name}: ${(err as Error).message}`, { cause: err });
  }
  // The command returns once its detached daemon is forked, and the daemon
  // then sets the TUN device's MTU to its default (1420) before it serves
  // the UAPI socket: an MTU set before that is silently undone (seen here:
  // VXLAN ports clamped below the containers' MTU, full-size frames
  // dropped). Wait until it answers.
  for (let i = 0; !(await answers(runner, name)); i++) {
    if (i >= 50) throw new TsnetError('TSNET_ERR_UNSUPPORTED', `wireguard-go started for ${name} but does not answer on its UAPI socket`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return 'wireguard-go';
}

/** Make the device or take over the one there, then give it its MTU, tag, address and link state. */
export async function ensureDevice(runner: Runner, spec: DeviceSpec): Promise<DeviceInfo> {
  let found = await findDevice(runner, spec.name);
  if (found === 'wireguard-go' && !(await answers(runner, spec.name))) {
    await deleteLink(runner, spec.name);
    found = undefined;
  }
  const implementation = found ?? (await create(runner, spec.name, spec.prefer ?? 'auto'));
  try {
    // No link-local address and no router advertisements: nothing but tsnet's tunnel address lives here.
    await ipBatch(runner, [['link', 'set', 'dev', spec.name, 'alias', spec.alias, 'mtu', spec.mtu, 'addrgenmode', 'none']]);
    await runner.writeSysctl(ifSysctl('ipv6', spec.name, 'accept_ra'), '0');
    // A tunnel address of an earlier underlay address (a renumbered host) goes.
    const want = spec.address.split('/')[0];
    const stale = found ? (await listAddrs(runner, spec.name)).flatMap((l) => l.addr_info).filter((a) => a.scope === 'global' && a.local !== want) : [];
    await ipBatch(runner, [
      ...stale.map((a) => ['addr', 'del', `${a.local}/${a.prefixlen}`, 'dev', spec.name] as const),
      ownAddrLine('replace', spec.address, spec.name),
      ['link', 'set', 'dev', spec.name, 'up'],
    ]);
  } catch (err) {
    if (!found) await deleteLink(runner, spec.name).catch(() => undefined);
    throw err;
  }
  return { implementation, created: found === undefined };
}

/**
 * Configure the device to exactly this (peers not named are removed;
 * unchanged ones keep their sessions). `wg` reads the configuration from a
 * file: node's child stdin is a socket, which `wg` cannot open as
 * /dev/stdin. The file holds the private key, so it is made 0600 in the
 * state directory (where the key lives anyway) and removed right after.
 */
export async function applyConfig(runner: Runner, name: string, config: WgConfig, dir: string): Promise<void> {
  const file = path.join(dir, `${name}.conf`);
  const text = renderConfig(config);
  await fs.rm(file, { force: true });
  await fs.writeFile(file, text, { mode: 0o600, flag: 'wx' });
  try {
    await runner.run('wg', ['syncconf', name, file]);
  } finally {
    await fs.rm(file, { force: true });
  }
}

export async function readDevice(runner: Runner, name: string): Promise<DeviceState> {
  const { stdout } = await runner.run('wg', ['show', name, 'dump']);
  return parseDump(stdout);
}

/** Remove the device; wireguard-go ends when its TUN device goes. Missing is fine. */
export async function deleteDevice(runner: Runner, name: string): Promise<boolean> {
  return deleteLink(runner, name);
}
