// Figures read from the store's state at scrape time, so nothing on the
// request path keeps a second count that could drift from the records.
import { parsePrefix, prefixSize } from '../net/cidr.js';
import type { ModeName } from '../driver/modes/mode.js';
import { MODE_NAMES } from '../driver/modes/registry.js';
import type { State } from '../store/schema.js';

export type Mode = ModeName;

/** Every mode at zero, so a mode with no networks still has its series. */
function perMode(): Record<Mode, number> {
  return Object.fromEntries(MODE_NAMES.map((m) => [m, 0])) as Record<Mode, number>;
}

export interface ModeCounts {
  networks: Record<Mode, number>;
  endpoints: Record<Mode, number>;
  /** published host ports by the mode of the endpoint's network and protocol */
  ports: Array<{ mode: Mode; proto: string; count: number }>;
  /** pools by what hands their addresses out: this host alone, or the overlay cluster-wide */
  pools: Record<'local' | 'cluster', number>;
}

export function modeCounts(state: State): ModeCounts {
  const out: ModeCounts = { networks: perMode(), endpoints: perMode(), ports: [], pools: { local: 0, cluster: 0 } };
  for (const n of Object.values(state.networks)) out.networks[n.mode]++;
  const ports = new Map<string, { mode: Mode; proto: string; count: number }>();
  for (const e of Object.values(state.endpoints)) {
    const mode = state.networks[e.networkId]?.mode ?? 'bridge';
    out.endpoints[mode]++;
    for (const p of e.ports) {
      const k = `${mode}/${p.proto}`;
      const entry = ports.get(k) ?? { mode, proto: p.proto, count: 0 };
      entry.count++;
      ports.set(k, entry);
    }
  }
  out.ports = [...ports.values()];
  for (const p of Object.values(state.pools)) out.pools[p.clusterNetwork ? 'cluster' : 'local']++;
  return out;
}

export interface PoolUsage {
  pool: string;
  /** the dynamic range (--ip-range), or the pool itself */
  range: string;
  allocated: number;
  /** addresses the pool can hand out: its size less the network (and IPv4 broadcast) address */
  capacity: number;
}

/** Allocation per pool. IPv6 capacities beyond 2^53 lose precision, which a ratio does not notice. */
export function poolUsage(state: State): PoolUsage[] {
  const out: PoolUsage[] = [];
  for (const p of Object.values(state.pools)) {
    const prefix = parsePrefix(p.pool);
    if (!prefix) continue;
    let capacity = prefixSize(prefix) - 1n;
    if (!prefix.v6 && prefix.bits <= 30) capacity -= 1n;
    if (prefix.v6 === false && prefix.bits >= 31) capacity = prefixSize(prefix);
    out.push({ pool: p.pool, range: p.subPool ?? p.pool, allocated: Object.keys(p.allocations).length, capacity: Number(capacity) });
  }
  return out;
}
