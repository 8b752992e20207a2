// The glue to dockerd's iptables FORWARD chain (policy DROP, lab.md). A drop
// in our nftables table is final, but an accept there is not: the packet
// still meets FORWARD's DROP policy. So tsnet keeps its own chain,
// TSNET-FORWARD, with two ACCEPTs per network (in and out of its bridge; the
// filtering already happened in nftables), jumped to from FORWARD right after
// DOCKER-USER so an operator's DOCKER-USER rules still apply to tsnet traffic,
// as they do to Docker's bridges.
//
// At start-up and reconcile the chain is rewritten whole from the in-memory
// list of networks in one iptables-restore --noflush transaction (the
// ":TSNET-FORWARD" line flushes just that chain), which is idempotent and
// self-healing. A network created or removed in between appends or deletes
// just its two rules: rewriting 2×N rules made network create slower with
// every network present (iptables-nft: 2 ms of CPU with 10 networks, 10 ms
// with 200). A delete that finds its rules gone falls back to the rewrite.
import type { Logger } from 'pino';
import { TsnetError } from '../errors.js';
import type { Runner } from '../kernel/exec.js';
import { isValidIfName } from '../kernel/names.js';

export const CHAIN = 'TSNET-FORWARD';

export interface IptNetwork {
  sid: string;
  bridge: string;
  /** has IPv4 / IPv6 subnets: a family's FORWARD glue is only needed for networks of that family */
  v4: boolean;
  v6: boolean;
}

function ruleLines(op: '-A' | '-D', n: IptNetwork): string[] {
  // Values become lines of iptables-restore input: a newline would be a new command.
  if (!isValidIfName(n.bridge)) throw new TsnetError('TSNET_ERR_INTERNAL', `unsafe bridge name for iptables: ${JSON.stringify(n.bridge)}`);
  if (!/^[0-9a-f]{12}$/.test(n.sid)) throw new TsnetError('TSNET_ERR_INTERNAL', `unsafe network id for iptables: ${JSON.stringify(n.sid)}`);
  const tag = `tsnet:${n.sid}`;
  return [`${op} ${CHAIN} -i ${n.bridge} -m comment --comment ${tag} -j ACCEPT`, `${op} ${CHAIN} -o ${n.bridge} -m comment --comment ${tag} -j ACCEPT`];
}

export function renderChain(networks: readonly IptNetwork[]): string {
  const lines = ['*filter', `:${CHAIN} - [0:0]`];
  for (const n of [...networks].sort((a, b) => a.bridge.localeCompare(b.bridge))) lines.push(...ruleLines('-A', n));
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** One network's two rules appended to (-A) or deleted from (-D) the chain, leaving the rest alone. */
export function renderRules(op: '-A' | '-D', n: IptNetwork): string {
  return ['*filter', ...ruleLines(op, n), 'COMMIT', ''].join('\n');
}

type Family = 'iptables' | 'ip6tables';

function has(f: Family, n: IptNetwork): boolean {
  return f === 'iptables' ? n.v4 : n.v6;
}

export class IptablesGlue {
  readonly #runner: Runner;
  readonly #log: Logger;
  #families: Family[] | undefined;

  constructor(runner: Runner, log: Logger) {
    this.#runner = runner;
    this.#log = log;
  }

  /** Which of iptables/ip6tables exist here; without them there is no FORWARD policy to work around. */
  async families(): Promise<Family[]> {
    if (this.#families) return this.#families;
    const found: Family[] = [];
    for (const f of ['iptables', 'ip6tables'] as const) {
      try {
        // --version, not a listing: iptables-nft creates the tables it lists.
        await this.#runner.run(f, ['--version']);
        found.push(f);
      } catch (err) {
        this.#log.warn({ err: (err as Error).message, family: f }, `${f} unavailable; not adding FORWARD accepts for it`);
      }
    }
    this.#families = found;
    return found;
  }

  /**
   * Rewrite TSNET-FORWARD and make sure FORWARD jumps to it (after
   * DOCKER-USER). A family with no network of its kind gets no glue at all,
   * so an IPv4-only host never sees tsnet create ip6tables state.
   */
  async sync(networks: readonly IptNetwork[], opts: { ensureJump: boolean }): Promise<void> {
    for (const f of await this.families()) await this.#syncFamily(f, networks, opts.ensureJump);
  }

  async #syncFamily(f: Family, networks: readonly IptNetwork[], ensureJump: boolean): Promise<void> {
    const mine = networks.filter((n) => has(f, n));
    if (mine.length === 0) {
      // Nothing to list when this process removed the chain itself (or never made one).
      if (this.#chain.get(f) !== 'absent') await this.#remove(f);
      return;
    }
    await this.#runner.run(`${f}-restore`, ['-w', '--noflush'], { input: renderChain(mine) });
    this.#chain.set(f, 'present');
    if (ensureJump || !this.#jumped.has(f)) await this.#ensureJump(f);
  }

  /**
   * Make sure these networks' rules and the jump exist, touching nothing
   * else: used when the store may be missing networks that still run (it was
   * restored from an older copy), so a rewrite would cut their traffic.
   */
  async ensure(networks: readonly IptNetwork[]): Promise<void> {
    for (const f of await this.families()) {
      const mine = networks.filter((n) => has(f, n));
      if (mine.length === 0) continue;
      const have = await this.#runner.run(f, ['-w', '-S', CHAIN]).then(
        (r) => new Set(r.stdout.split('\n').map((l) => l.replace(/"/g, ''))),
        () => undefined,
      );
      const lines = ['*filter'];
      if (!have) lines.push(`:${CHAIN} - [0:0]`);
      for (const n of mine) for (const l of ruleLines('-A', n)) if (!have?.has(l)) lines.push(l);
      if (lines.length > 1) await this.#runner.run(`${f}-restore`, ['-w', '--noflush'], { input: [...lines, 'COMMIT', ''].join('\n') });
      this.#chain.set(f, 'present');
      await this.#ensureJump(f);
    }
  }

  /** `n` was added; `all` includes it. */
  async add(n: IptNetwork, all: readonly IptNetwork[]): Promise<void> {
    for (const f of await this.families()) {
      if (!has(f, n)) continue;
      if (this.#chain.get(f) !== 'present' || !this.#jumped.has(f)) await this.#syncFamily(f, all, false);
      else await this.#runner.run(`${f}-restore`, ['-w', '--noflush'], { input: renderRules('-A', n) });
    }
  }

  /** `n` was removed; `all` no longer includes it. */
  async delete(n: IptNetwork, all: readonly IptNetwork[]): Promise<void> {
    for (const f of await this.families()) {
      if (!has(f, n)) continue;
      if (this.#chain.get(f) !== 'present' || !all.some((o) => has(f, o))) {
        await this.#syncFamily(f, all, false);
        continue;
      }
      try {
        await this.#runner.run(`${f}-restore`, ['-w', '--noflush'], { input: renderRules('-D', n) });
      } catch (err) {
        // Its rules were already gone (removed behind tsnet's back): rewrite the chain.
        this.#log.warn({ err: (err as Error).message, family: f }, 'could not delete a network\'s FORWARD rules; rewriting TSNET-FORWARD');
        await this.#syncFamily(f, all, false);
      }
    }
  }

  readonly #jumped = new Set<Family>();
  /** whether this process knows TSNET-FORWARD to exist; unknown until first synced */
  readonly #chain = new Map<Family, 'present' | 'absent'>();

  async #ensureJump(f: Family): Promise<void> {
    this.#jumped.add(f);
    const { stdout } = await this.#runner.run(f, ['-w', '-S', 'FORWARD']);
    const rules = stdout.split('\n').filter((l) => l.startsWith('-A FORWARD'));
    const ours = rules.findIndex((l) => l === `-A FORWARD -j ${CHAIN}`);
    const dockerUser = rules.findIndex((l) => l === '-A FORWARD -j DOCKER-USER');
    if (ours >= 0 && (dockerUser < 0 || ours > dockerUser)) return;
    if (ours >= 0) await this.#runner.run(f, ['-w', '-D', 'FORWARD', '-j', CHAIN]);
    // Rule numbers are 1-based; insert just after DOCKER-USER, else first.
    const position = dockerUser >= 0 ? (ours >= 0 && ours < dockerUser ? dockerUser : dockerUser + 1) + 1 : 1;
    await this.#runner.run(f, ['-w', '-I', 'FORWARD', String(position), '-j', CHAIN]);
  }

  /** Remove the jump and the chain (when the last network goes, and by cleanup tools). Only touches what exists. */
  async removeAll(): Promise<void> {
    for (const f of await this.families()) await this.#remove(f);
  }

  async #remove(f: Family): Promise<void> {
    this.#jumped.delete(f);
    this.#chain.delete(f);
    // Listing with iptables-nft creates the table it lists: look with nft first.
    const family = f === 'iptables' ? 'ip' : 'ip6';
    const present = await this.#runner.run('nft', ['list', 'table', family, 'filter']).then(
      () => true,
      () => false,
    );
    if (!present) {
      this.#chain.set(f, 'absent');
      return;
    }
    const { stdout } = await this.#runner.run(f, ['-w', '-S']);
    const lines = stdout.split('\n');
    const jumps = lines.filter((l) => l === `-A FORWARD -j ${CHAIN}`).length;
    const exists = lines.includes(`-N ${CHAIN}`);
    if (exists || jumps > 0) {
      const script = ['*filter', ...Array.from({ length: jumps }, () => `-D FORWARD -j ${CHAIN}`), ...(exists ? [`-F ${CHAIN}`, `-X ${CHAIN}`] : []), 'COMMIT', ''].join('\n');
      await this.#runner.run(`${f}-restore`, ['-w', '--noflush'], { input: script });
      await this.#dropEmptyTable(family);
    }
    this.#chain.set(f, 'absent');
  }

  /**
   * iptables-nft creates its filter table on first use. If, once tsnet's
   * chain is gone, that table holds no rule and no chain that drops, it is
   * removed, so the namespace's rule set ends where it started. A table with
   * anything in it (dockerd's, an operator's) is left alone.
   */
  async #dropEmptyTable(family: 'ip' | 'ip6'): Promise<void> {
    let parsed: { nftables: Array<Record<string, { policy?: string; hook?: string } | undefined>> };
    try {
      parsed = JSON.parse((await this.#runner.run('nft', ['-j', 'list', 'table', family, 'filter'])).stdout);
    } catch {
      return;
    }
    const items = parsed.nftables.filter((i) => !i.metainfo && !i.table);
    const empty = items.every((i) => i.chain !== undefined && i.chain.hook !== undefined && (i.chain.policy ?? 'accept') === 'accept');
    if (empty) await this.#runner.run('nft', ['delete', 'table', family, 'filter']).catch(() => undefined);
  }
}
