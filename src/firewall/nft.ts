// tsnet's own nftables table. Design notes:
// - tsnet owns `table inet tsnet` outright; nothing else is touched. Base
//   chains dispatch through verdict maps keyed by interface name, so adding a
//   network is "add chains + add map elements" and its cost does not grow
//   with the number of networks (no rule lists to scan, no handles to find).
// - The forward base chain runs at priority filter-1, before iptables'
//   FORWARD (dockerd's, policy DROP). Our drops are final whatever iptables
//   says; our accepts are not, which is why firewall/iptables.ts adds the
//   matching ACCEPTs to dockerd's FORWARD path.
// - Isolation uses `meta oifkind/iifkind "bridge"`: a tsnet network may talk
//   to the uplink but never to another bridge, be it tsnet's or Docker's, in
//   either direction. Docker's isolation chains only know Docker's bridges.
// - Every change is one `nft -f -` transaction: it applies whole or not at all.
import type { Runner } from '../kernel/exec.js';
import { TsnetError } from '../errors.js';

export const TABLE = 'tsnet';

export interface NftNetwork {
  /** short network id, used in chain names */
  sid: string;
  bridge: string;
  internal: boolean;
  icc: boolean;
  masquerade: boolean;
  /** allow new connections from outside straight to container addresses */
  directAccess: boolean;
  subnets4: string[];
  subnets6: string[];
}

const SAFE = /^[A-Za-z0-9_.:/-]+$/;

function safe(token: string): string {
  if (!SAFE.test(token)) throw new TsnetError('TSNET_ERR_INTERNAL', `unsafe nft token ${JSON.stringify(token)}`);
  return token;
}

function q(ifname: string): string {
  return `"${safe(ifname)}"`;
}

export function chainNames(sid: string): { out: string; in: string; post: string } {
  safe(sid);
  return { out: `n-${sid}-out`, in: `n-${sid}-in`, post: `n-${sid}-post` };
}

/** The skeleton: table, maps and base chains. Re-applying it is harmless; base chains are rewritten, maps kept. */
export function renderBase(): string {
  const t = `inet ${TABLE}`;
  return [
    `add table ${t}`,
    `add map ${t} fwd_out { type ifname : verdict; }`,
    `add map ${t} fwd_in { type ifname : verdict; }`,
    `add map ${t} post_in { type ifname : verdict; }`,
    `add chain ${t} forward { type filter hook forward priority filter - 1; policy accept; }`,
    `flush chain ${t} forward`,
    `add rule ${t} forward iifname vmap @fwd_out`,
    `add rule ${t} forward oifname vmap @fwd_in`,
    `add chain ${t} postrouting { type nat hook postrouting priority srcnat; policy accept; }`,
    `flush chain ${t} postrouting`,
    `add rule ${t} postrouting iifname vmap @post_in`,
    '',
  ].join('\n');
}

export function renderNetwork(n: NftNetwork): string {
  const t = `inet ${TABLE}`;
  const c = chainNames(n.sid);
  const br = q(n.bridge);
  const lines: string[] = [];
  for (const name of [c.out, c.in, c.post]) lines.push(`add chain ${t} ${name}`, `flush chain ${t} ${name}`);

  // Leaving the bridge (iif = bridge).
  if (n.icc) lines.push(`add rule ${t} ${c.out} oifname ${br} accept`);
  else {
    // ICC off: containers of this network may not talk to each other, except
    // through a published port (hairpin via the host address).
    lines.push(`add rule ${t} ${c.out} oifname ${br} ct status dnat accept`);
    lines.push(`add rule ${t} ${c.out} oifname ${br} ct state established,related accept`);
    lines.push(`add rule ${t} ${c.out} oifname ${br} drop`);
  }
  if (n.internal) lines.push(`add rule ${t} ${c.out} drop`);
  else {
    lines.push(`add rule ${t} ${c.out} ct status dnat accept`);
    lines.push(`add rule ${t} ${c.out} meta oifkind "bridge" drop`);
    lines.push(`add rule ${t} ${c.out} accept`);
  }

  // Entering the bridge from elsewhere (oif = bridge, iif != bridge).
  if (n.internal) lines.push(`add rule ${t} ${c.in} drop`);
  else {
    lines.push(`add rule ${t} ${c.in} ct state established,related accept`);
    lines.push(`add rule ${t} ${c.in} ct status dnat accept`);
    lines.push(`add rule ${t} ${c.in} meta iifkind "bridge" drop`);
    if (n.directAccess) lines.push(`add rule ${t} ${c.in} accept`);
    lines.push(`add rule ${t} ${c.in} drop`);
  }

  // Source NAT for traffic leaving through the uplink.
  if (n.masquerade && !n.internal) {
    for (const s of n.subnets4) lines.push(`add rule ${t} ${c.post} oifname != ${br} ip saddr ${safe(s)} masquerade`);
    for (const s of n.subnets6) lines.push(`add rule ${t} ${c.post} oifname != ${br} ip6 saddr ${safe(s)} masquerade`);
  }
  // Hairpin: a container reaching a published port of its own network through
  // the host address. Masquerading makes the reply come back through the host,
  // so it works with or without br_netfilter.
  lines.push(`add rule ${t} ${c.post} oifname ${br} ct status dnat masquerade`);

  lines.push(`add element ${t} fwd_out { ${br} : jump ${c.out} }`);
  lines.push(`add element ${t} fwd_in { ${br} : jump ${c.in} }`);
  lines.push(`add element ${t} post_in { ${br} : jump ${c.post} }`);
  return `${lines.join('\n')}\n`;
}

/**
 * Remove a network's chains and map entries. Written to succeed whether or
 * not they exist: each object is first added (a no-op when present), then
 * deleted, all in one transaction.
 */
export function renderNetworkRemoval(sid: string, bridge: string): string {
  const t = `inet ${TABLE}`;
  const c = chainNames(sid);
  const br = q(bridge);
  const lines = [`add table ${t}`];
  for (const name of [c.out, c.in, c.post]) lines.push(`add chain ${t} ${name}`);
  lines.push(
    `add element ${t} fwd_out { ${br} : jump ${c.out} }`,
    `add element ${t} fwd_in { ${br} : jump ${c.in} }`,
    `add element ${t} post_in { ${br} : jump ${c.post} }`,
    `delete element ${t} fwd_out { ${br} }`,
    `delete element ${t} fwd_in { ${br} }`,
    `delete element ${t} post_in { ${br} }`,
  );
  for (const name of [c.out, c.in, c.post]) lines.push(`flush chain ${t} ${name}`, `delete chain ${t} ${name}`);
  return `${lines.join('\n')}\n`;
}

export async function nftApply(runner: Runner, script: string): Promise<void> {
  await runner.run('nft', ['-f', '-'], { input: script });
}

export interface NftTableView {
  chains: string[];
  /** map name -> interface names with an element */
  elements: Record<string, string[]>;
}

/** Read tsnet's table as JSON (reconcile only; never on the request path). */
export async function readTable(runner: Runner): Promise<NftTableView | undefined> {
  let stdout: string;
  try {
    ({ stdout } = await runner.run('nft', ['-j', 'list', 'table', 'inet', TABLE]));
  } catch {
    return undefined;
  }
  const parsed = JSON.parse(stdout) as { nftables: Array<Record<string, { name?: string; elem?: unknown[] }>> };
  const view: NftTableView = { chains: [], elements: {} };
  for (const item of parsed.nftables) {
    if (item.chain?.name) view.chains.push(item.chain.name);
    if (item.map?.name) {
      const names: string[] = [];
      for (const e of item.map.elem ?? []) {
        const pair = e as unknown[];
        if (Array.isArray(pair) && typeof pair[0] === 'string') names.push(pair[0]);
      }
      view.elements[item.map.name] = names;
    }
  }
  return view;
}
