// Typed readers over `ip -json` and the ip -batch writer. Only the fields
// tsnet reads are declared; everything is read as JSON, never by regex over
// human-readable output.
import { TsnetError } from '../errors.js';
import { CommandError, isNotFound, type Runner } from './exec.js';

export interface LinkInfo {
  ifname: string;
  ifindex: number;
  mtu: number;
  operstate?: string;
  flags: string[];
  address?: string;
  ifalias?: string;
  master?: string;
  /** the lower device of a macvlan, ipvlan or VLAN link in the same namespace */
  link?: string;
  link_netnsid?: number;
  linkinfo?: {
    info_kind?: string;
    info_data?: Record<string, unknown>;
    info_slave_kind?: string;
    info_slave_data?: Record<string, unknown>;
  };
}

export interface AddrInfo {
  family: 'inet' | 'inet6';
  local: string;
  prefixlen: number;
  scope?: string;
}

export interface RouteInfo {
  dst: string;
  dev?: string;
  gateway?: string;
  type?: string;
  table?: string;
  protocol?: string;
  prefsrc?: string;
}

function parseJson<T>(text: string, what: string): T {
  try {
    return JSON.parse(text.trim() === '' ? '[]' : text) as T;
  } catch (err) {
    throw new TsnetError('TSNET_ERR_CMD_FAILED', `cannot parse ${what} output as JSON`, { cause: err });
  }
}

/**
 * Link queries are fed to `ip -json -details -batch -` rather than given as
 * arguments, so a warm spare (exec.ts) answers them: a pipe write instead of
 * fork, exec and dynamic linking, about 5 ms of the 6.4 a macvlan
 * CreateNetwork took. Each spare is a fresh process, so its answers are too.
 */
async function queryLinks(runner: Runner, line: readonly (string | number)[]): Promise<LinkInfo[]> {
  const { stdout } = await runner.run('ip', ['-json', '-details', '-batch', '-'], { input: `${batchLine(line)}\n` });
  return parseJson<LinkInfo[]>(stdout, 'ip link');
}

export async function getLink(runner: Runner, name: string): Promise<LinkInfo | undefined> {
  try {
    return (await queryLinks(runner, ['link', 'show', 'dev', name]))[0];
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

export async function listLinks(runner: Runner): Promise<LinkInfo[]> {
  return queryLinks(runner, ['link', 'show']);
}

export async function listAddrs(runner: Runner, dev?: string): Promise<Array<{ ifname: string; addr_info: AddrInfo[] }>> {
  const args = ['-json', 'addr', 'show', ...(dev ? ['dev', dev] : [])];
  try {
    const { stdout } = await runner.run('ip', args);
    return parseJson<Array<{ ifname: string; addr_info: AddrInfo[] }>>(stdout, 'ip addr');
  } catch (err) {
    if (dev && isNotFound(err)) return [];
    throw err;
  }
}

/** Every route of one family in every table: what an auto-chosen pool must not overlap. */
export async function listRoutes(runner: Runner, family: 4 | 6): Promise<RouteInfo[]> {
  const { stdout } = await runner.run('ip', ['-json', `-${family}`, 'route', 'show', 'table', 'all']);
  return parseJson<RouteInfo[]>(stdout, 'ip route');
}

/**
 * Routes of the main table carrying a protocol tag (tsnet's own). A host
 * route's dst comes without its length in ip's JSON: it gets /32 or /128.
 */
export async function listProtoRoutes(runner: Runner, family: 4 | 6, proto: number): Promise<RouteInfo[]> {
  const { stdout } = await runner.run('ip', ['-json', `-${family}`, 'route', 'show', 'proto', String(proto)]);
  return parseJson<RouteInfo[]>(stdout, 'ip route').map((r) => (r.dst.includes('/') || r.dst === 'default' ? r : { ...r, dst: `${r.dst}/${family === 4 ? 32 : 128}` }));
}

/** The IPv6 addresses a device answers neighbour solicitations for (proxy NDP entries). */
export async function listProxyNeigh(runner: Runner, dev: string): Promise<string[]> {
  try {
    const { stdout } = await runner.run('ip', ['-json', '-6', 'neigh', 'show', 'proxy', 'dev', dev]);
    return parseJson<Array<{ dst?: string }>>(stdout, 'ip neigh').flatMap((n) => (n.dst ? [n.dst] : []));
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
}

/** Source address of the default route, the usual "this host's address". */
export async function defaultRouteInfo(runner: Runner, family: 4 | 6 = 4): Promise<RouteInfo | undefined> {
  const { stdout } = await runner.run('ip', ['-json', `-${family}`, 'route', 'show', 'default']);
  return parseJson<RouteInfo[]>(stdout, 'ip route')[0];
}

// Tokens that may appear in an ip -batch line. The batch parser splits on
// whitespace and treats '#' and quotes specially, so anything else is refused
// outright rather than escaped: a newline in a name would be a second command.
const BATCH_TOKEN = /^[A-Za-z0-9_.:/@+-]+$/;

export function batchLine(tokens: readonly (string | number)[]): string {
  for (const t of tokens) {
    const s = String(t);
    if (!BATCH_TOKEN.test(s)) throw new TsnetError('TSNET_ERR_INTERNAL', `unsafe token for ip -batch: ${JSON.stringify(s)}`);
  }
  return tokens.join(' ');
}

/**
 * An ip line giving DEV an address tsnet owns. IPv6 ones skip duplicate
 * address detection: the address is ours by allocation, and while DAD runs
 * (a second or two after the first port brings the bridge up) the address is
 * tentative, so a container's first packets to its gateway go unanswered.
 */
export function ownAddrLine(verb: 'add' | 'replace', cidr: string, dev: string): string[] {
  return ['addr', verb, cidr, 'dev', dev, ...(cidr.includes(':') ? ['nodad'] : [])];
}

/** Run several ip commands in one process. Not atomic: callers undo by deleting the links they add. */
export async function ipBatch(runner: Runner, lines: ReadonlyArray<readonly (string | number)[]>, opts: { force?: boolean } = {}): Promise<void> {
  if (lines.length === 0) return;
  const input = `${lines.map(batchLine).join('\n')}\n`;
  await runner.run('ip', [...(opts.force ? ['-force'] : []), '-batch', '-'], { input });
}

/** Delete a link; a missing link is success. */
export async function deleteLink(runner: Runner, name: string): Promise<boolean> {
  try {
    await runner.run('ip', ['link', 'del', 'dev', name]);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/** Delete many links with one process; missing ones are ignored (-force keeps going). */
export async function deleteLinks(runner: Runner, names: readonly string[]): Promise<void> {
  if (names.length === 0) return;
  try {
    await ipBatch(
      runner,
      names.map((n) => ['link', 'del', 'dev', n]),
      { force: true },
    );
  } catch (err) {
    // With -force ip reports the last failure; missing devices are expected.
    if (!(err instanceof CommandError) || !isNotFound(err)) throw err;
  }
}
