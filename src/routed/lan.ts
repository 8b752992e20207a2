// This host's LAN addresses as it publishes them in etcd beside its VTEP:
// a routed network sends another host's IPv4 blocks to its IPv4 address and
// its IPv6 blocks to its IPv6 address, so a member names one of each family
// where its underlay interface has one (the VTEP's own family is the VTEP).
import type { MemberAddrs } from '../cluster/registry.js';
import type { Runner } from '../kernel/exec.js';
import { listAddrs } from '../kernel/ip.js';
import { ipFamily } from '../net/cidr.js';
import type { Underlay } from '../overlay/manager.js';

export async function lanAddresses(runner: Runner, underlay: Underlay): Promise<MemberAddrs> {
  const mine = ipFamily(underlay.local);
  const other = (await listAddrs(runner, underlay.dev))
    .flatMap((l) => l.addr_info)
    .find((a) => a.scope === 'global' && a.family === (mine === 4 ? 'inet6' : 'inet'));
  const out: MemberAddrs = mine === 4 ? { addr4: underlay.local } : { addr6: underlay.local };
  if (other) {
    if (mine === 4) out.addr6 = other.local;
    else out.addr4 = other.local;
  }
  return out;
}
