// /proc/self/mountinfo (proc(5)), read for one question: do mounts made
// under a directory reach other mount namespaces? A managed plugin names
// overlay namespaces with bind mounts in its own mount namespace, and they
// outlive it only if those mounts propagate to the host's.
//
//   36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//   id parent dev root mount-point options [optional fields…] - type source super-options

export interface MountEntry {
  id: number;
  parent: number;
  /** the directory of its filesystem the mount shows */
  root: string;
  mountPoint: string;
  /** peer group (shared:N): mounts and unmounts under it reach its peers, both ways */
  shared: number | undefined;
  /** peer group it receives from (master:N), sending nothing back */
  master: number | undefined;
  fsType: string;
}

/** shared: mounts made here reach the peers; slave: it only receives; private: neither. */
export type Propagation = 'shared' | 'slave' | 'private';

/** Paths escape space, tab, newline and backslash as \ooo. */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (f.length < 10 || sep < 0) continue;
    let shared: number | undefined;
    let master: number | undefined;
    for (const opt of f.slice(6, sep)) {
      const m = /^(shared|master):(\d+)$/.exec(opt);
      if (m?.[1] === 'shared') shared = Number(m[2]);
      else if (m?.[1] === 'master') master = Number(m[2]);
    }
    out.push({ id: Number(f[0]), parent: Number(f[1]), root: unescape(f[3]!), mountPoint: unescape(f[4]!), shared, master, fsType: f[sep + 1]! });
  }
  return out;
}

/**
 * The mount a path (absolute, symlinks resolved) lies on: the deepest mount
 * point above it, and of mounts stacked there the last one listed, which is
 * the one on top.
 */
export function mountOf(entries: readonly MountEntry[], path: string): MountEntry | undefined {
  let best: MountEntry | undefined;
  for (const e of entries) {
    const mp = e.mountPoint;
    const holds = mp === '/' || path === mp || path.startsWith(`${mp}/`);
    if (holds && (!best || mp.length >= best.mountPoint.length)) best = e;
  }
  return best;
}

/** A slave that is also shared (shared:N master:M) still sends nothing to its master's group. */
export function propagationOf(e: MountEntry): Propagation {
  if (e.master !== undefined) return 'slave';
  return e.shared !== undefined ? 'shared' : 'private';
}
