// Where named network namespaces live for a tsnet in a mount namespace of
// its own: the managed plugin. `ip netns` only knows /run/netns, and a name
// there is a bind mount that must be made in the host's mount namespace (or
// reach it) to outlive the plugin. The plugin's rootfs has /run/netns as a
// symlink into the host's /run (the manifest's run mount, rshared); the
// host's /run is a tmpfs that every boot empties, so the directory itself
// is made here, at start-up, where a mount of /run/netns alone would have
// needed it to exist before dockerd started the plugin.
import { promises as fs } from 'node:fs';
import { TsnetError, quote } from '../errors.js';
import { mountOf, parseMountinfo, propagationOf, type Propagation } from './mountinfo.js';
import { NETNS_DIR } from './overlay-ns.js';

export interface NetnsDirReading {
  /** TSNET_NETNS_DIR: where /run/netns should lead */
  dir: string;
  /** where /run/netns leads (realpath); undefined: nowhere (missing, or a dangling link) */
  leadsTo: string | undefined;
  /** the mount the directory lies on */
  mount: { mountPoint: string; propagation: Propagation } | undefined;
}

/**
 * Make `dir` (mode 0755, as `ip netns add` would) and check that /run/netns
 * leads to it: the plugin's rootfs and its manifest must agree, or overlay
 * namespaces would be named where nothing outlives the plugin.
 */
export async function prepareNetnsDir(dir: string): Promise<void> {
  try {
    await fs.mkdir(dir, { recursive: true, mode: 0o755 });
  } catch (err) {
    throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_NETNS_DIR: cannot make ${quote(dir)}: ${(err as Error).message}`, { cause: err });
  }
  const want = await fs.realpath(dir);
  const leadsTo = await fs.realpath(NETNS_DIR).catch(() => undefined);
  if (leadsTo !== want) {
    throw new TsnetError(
      'TSNET_ERR_INVALID_CONFIG',
      `TSNET_NETNS_DIR: ${NETNS_DIR} leads to ${leadsTo ?? 'nothing'}, not to ${quote(dir)}: the plugin's rootfs needs ${NETNS_DIR} -> ${dir} (plugin/rootfs.sh makes it)`,
    );
  }
}

export async function readNetnsDir(dir: string, mountinfo: () => Promise<string> = () => fs.readFile('/proc/self/mountinfo', 'utf8')): Promise<NetnsDirReading> {
  const leadsTo = await fs.realpath(NETNS_DIR).catch(() => undefined);
  const real = await fs.realpath(dir).catch(() => dir);
  const m = mountOf(parseMountinfo(await mountinfo()), real);
  return { dir, leadsTo, mount: m ? { mountPoint: m.mountPoint, propagation: propagationOf(m) } : undefined };
}
