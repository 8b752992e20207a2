// Devices that put containers straight on a LAN: macvlan and ipvlan
// children of a parent link, 802.1q sub-interfaces as parents, and a parent
// of tsnet's own for networks that must not reach the LAN. Design notes:
// - A child is created in the host namespace, down, and handed to dockerd,
//   which moves it into the container (as it does a veth end); the kernel
//   deletes it with the container's namespace.
// - Docker makes its isolated parents from the dummy driver. Kernels
//   without it (ours) still have veth: one end of a pair, both ends up so
//   the children have carrier, and the other end never used.
// - A device type the kernel lacks fails here with an error that names the
//   module, not with ip's "Unknown device type".
import { TsnetError } from '../errors.js';
import { CommandError, type Runner } from './exec.js';
import { batchLine, ipBatch, ownAddrLine, type LinkInfo, type RouteInfo } from './ip.js';

export type MacvlanMode = 'bridge' | 'private' | 'vepa' | 'passthru';
export type IpvlanMode = 'l2' | 'l3' | 'l3s';
export type IpvlanFlag = 'bridge' | 'private' | 'vepa';

export interface ChildSpec {
  name: string;
  parent: string;
  mtu: number;
  alias: string;
  kind: 'macvlan' | 'ipvlan';
  /** macvlan_mode or ipvlan_mode */
  mode: string;
  /** ipvlan only */
  flag?: IpvlanFlag;
  /** macvlan only: ipvlan children share the parent's MAC */
  mac?: string;
}

/** The `ip link add` tokens of a child, after its name. */
export function childLine(spec: ChildSpec): Array<string | number> {
  const line: Array<string | number> = ['link', 'add', 'link', spec.parent, 'name', spec.name];
  if (spec.mac) line.push('address', spec.mac);
  line.push('mtu', spec.mtu, 'type', spec.kind, 'mode', spec.mode);
  if (spec.kind === 'ipvlan' && spec.flag && spec.flag !== 'bridge') line.push(spec.flag);
  return line;
}

/** Map "the kernel has no such device type" to an error that says which module is missing. */
export function kernelLacks(err: unknown, kind: string): TsnetError | undefined {
  if (!(err instanceof CommandError)) return undefined;
  if (!/Unknown device type|Operation not supported|not supported/i.test(err.stderr)) return undefined;
  const module = kind === 'vlan' ? '8021q' : kind;
  return new TsnetError('TSNET_ERR_UNSUPPORTED', `this host's kernel lacks ${kind} devices (module ${module}); load it (modprobe ${module}) or use another mode`, { cause: err });
}

async function withKindCheck(kind: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    throw kernelLacks(err, kind) ?? err;
  }
}

/** A child for an endpoint: created down, tagged, with IPv6 autoconfiguration off until dockerd configures it. */
export async function createChild(runner: Runner, spec: ChildSpec): Promise<void> {
  await withKindCheck(spec.kind, () => ipBatch(runner, [childLine(spec), ['link', 'set', 'dev', spec.name, 'alias', spec.alias]]));
}

/**
 * Create and delete a child of the kind at once: a network of a type the
 * kernel lacks is refused at create time, not at its first container.
 */
export async function probeChild(runner: Runner, spec: ChildSpec): Promise<void> {
  // One process: a batch stops at its first failure, so a kernel without the
  // type leaves nothing, and one with it deletes the probe at once.
  await withKindCheck(spec.kind, () => ipBatch(runner, [childLine(spec), ['link', 'del', 'dev', spec.name]]));
}

/** `eth0.50` → { base: eth0, vlan: 50 }; undefined for a name that is not in that form. */
export function vlanOf(name: string): { base: string; vlan: number } | undefined {
  const m = /^(.+)\.(\d{1,4})$/.exec(name);
  if (!m) return undefined;
  return { base: m[1]!, vlan: Number(m[2]) };
}

export async function createVlan(runner: Runner, spec: { name: string; base: string; vlan: number; alias: string }): Promise<void> {
  await withKindCheck('vlan', () =>
    ipBatch(runner, [
      ['link', 'add', 'link', spec.base, 'name', spec.name, 'type', 'vlan', 'id', spec.vlan],
      ['link', 'set', 'dev', spec.name, 'alias', spec.alias],
      ['link', 'set', 'dev', spec.name, 'up'],
    ]),
  );
}

/** A parent that leads nowhere: children on it reach only each other. */
export async function createIsolatedParent(runner: Runner, spec: { name: string; peer: string; mtu: number; alias: string }): Promise<void> {
  await ipBatch(runner, [
    ['link', 'add', 'name', spec.name, 'mtu', spec.mtu, 'type', 'veth', 'peer', 'name', spec.peer, 'mtu', spec.mtu],
    ['link', 'set', 'dev', spec.name, 'alias', spec.alias, 'addrgenmode', 'none'],
    ['link', 'set', 'dev', spec.peer, 'alias', spec.alias, 'addrgenmode', 'none'],
    ['link', 'set', 'dev', spec.peer, 'up'],
    ['link', 'set', 'dev', spec.name, 'up'],
  ]);
}

/** The host's own child on the parent, through which it reaches its containers (kernel isolation forbids the parent itself). */
export async function createShim(runner: Runner, spec: Omit<ChildSpec, 'mac'>): Promise<void> {
  await withKindCheck(spec.kind, () =>
    ipBatch(runner, [childLine(spec), ['link', 'set', 'dev', spec.name, 'alias', spec.alias, 'addrgenmode', 'none'], ['link', 'set', 'dev', spec.name, 'up']]),
  );
}

/** What a container's child looked like, to make it again after its parent was re-created. */
export interface RestoreSpec extends ChildSpec {
  /** the container's network namespace (the sandbox key dockerd gave at Join) */
  sandbox: string;
  /** interface name prefix inside the container (eth) */
  prefix: string;
  /** CIDR addresses */
  addresses: string[];
  /** the Join answer's routes: gateways, or connected routes (ipvlan l3) */
  gateway4?: string;
  gateway6?: string;
  connected: string[];
}

// dockerd hands out the sandbox paths; still, only plain absolute paths reach nsenter.
const SANDBOX_PATH = /^\/[A-Za-z0-9_.\/-]{1,4000}$/;

/**
 * Make a container's child again, inside its running sandbox: the kernel
 * deletes a macvlan/ipvlan child with its parent, so a parent that went away
 * and came back leaves the container without its LAN link. The child is
 * created on the new parent in the host namespace, moved into the sandbox,
 * and given the name (the first free one with the network's prefix), MAC,
 * addresses and routes dockerd gave it. A default route is added only where
 * the container has none (another network may give it). Returns the name.
 */
export async function restoreChild(runner: Runner, spec: RestoreSpec): Promise<string> {
  if (!SANDBOX_PATH.test(spec.sandbox) || spec.sandbox.split('/').includes('..')) {
    throw new TsnetError('TSNET_ERR_INTERNAL', `refusing sandbox path ${JSON.stringify(spec.sandbox)}`);
  }
  await withKindCheck(spec.kind, () =>
    ipBatch(runner, [childLine(spec), ['link', 'set', 'dev', spec.name, 'alias', spec.alias], ['link', 'set', 'dev', spec.name, 'netns', spec.sandbox]]),
  );
  const inside = (args: string[], input?: string): ReturnType<Runner['run']> => runner.run('nsenter', [`--net=${spec.sandbox}`, '--', 'ip', ...args], input === undefined ? {} : { input });
  const names = new Set((JSON.parse((await inside(['-json', 'link', 'show'])).stdout || '[]') as LinkInfo[]).map((l) => l.ifname));
  let n = 0;
  while (names.has(`${spec.prefix}${n}`)) n++;
  const dev = `${spec.prefix}${n}`;
  const defaults = async (family: '-4' | '-6'): Promise<number> => (JSON.parse((await inside(['-json', family, 'route', 'show', 'default'])).stdout || '[]') as RouteInfo[]).length;
  const lines: Array<Array<string | number>> = [
    ['link', 'set', 'dev', spec.name, 'name', dev],
    ['link', 'set', 'dev', dev, 'up'],
    ...spec.addresses.map((a) => ownAddrLine('add', a, dev)),
    ...spec.connected.map((dst) => ['route', 'replace', dst, 'dev', dev]),
  ];
  if (spec.gateway4 && (await defaults('-4')) === 0) lines.push(['route', 'add', '0.0.0.0/0', 'via', spec.gateway4, 'dev', dev]);
  if (spec.gateway6 && (await defaults('-6')) === 0) lines.push(['route', 'add', '::/0', 'via', spec.gateway6, 'dev', dev]);
  await inside(['-batch', '-'], `${lines.map(batchLine).join('\n')}\n`);
  return dev;
}
