// A fake Runner for the unit and API tiers: it never starts a process and
// never touches the kernel. It records every call (argv and stdin) so tests
// assert on what tsnet *would* have run, answers the read-only `ip -json`
// queries from a small model the test configures (links, routes), and fails
// chosen commands on demand with a real CommandError, so the code under test
// takes its genuine error paths (isNotFound, isExists, undo).
//
// The link model follows `ip -batch` input just enough for the driver's own
// reads to see its writes: `link add name X ... type T` adds X (and the peer
// of a veth), `link set dev X alias A` tags it, `link del dev X` removes it.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import { CommandError, type RunOptions, type RunResult, type Runner } from '../../src/kernel/exec.js';
import type { AddrInfo, LinkInfo, RouteInfo } from '../../src/kernel/ip.js';

export interface RecordedCall {
  cmd: string;
  args: string[];
  input: string | undefined;
  /** "cmd arg1 arg2 …", handy for includes/regex checks */
  line: string;
}

export interface FailRule {
  cmd: string;
  /** every one of these must appear in args (in any position) */
  args?: string[];
  /** a substring (or pattern) the stdin must contain */
  input?: string | RegExp;
  stderr: string;
  exitCode?: number;
  /** fail only this many times (default: always) */
  times?: number;
}

const NOT_FOUND = (name: string): string => `Device "${name}" does not exist.\n`;

export class FakeRunner implements Runner {
  readonly netnsPath = undefined;
  readonly calls: RecordedCall[] = [];
  /** the modelled links, by name */
  readonly links = new Map<string, LinkInfo>();
  routes4: RouteInfo[] = [];
  routes6: RouteInfo[] = [];
  defaultRoutes4: RouteInfo[] = [];
  defaultRoutes6: RouteInfo[] = [];
  /** routes with a protocol tag (`route replace … proto N` in a batch adds, `route del … proto N` removes), by dst */
  readonly protoRoutes = new Map<string, RouteInfo & { proto: string }>();
  /** what `ip -json addr show` lists */
  addrs: Array<{ ifname: string; addr_info: AddrInfo[] }> = [];
  /** what `iptables -S FORWARD` prints (dockerd's FORWARD chain by default) */
  forwardRules = '-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-FORWARD\n';
  readonly sysctls = new Map<string, string>();
  readonly sysctlWrites: Array<[string, string]> = [];
  readonly #fail: FailRule[] = [];
  /** veth pairs: deleting either end deletes both, as the kernel does */
  readonly #peers = new Map<string, string>();
  #nextIndex = 1;

  /** Make matching commands throw a CommandError with this stderr. */
  failOn(rule: FailRule): this {
    this.#fail.push({ ...rule });
    return this;
  }

  clearFailures(): void {
    this.#fail.length = 0;
  }

  /** Model an existing link (e.g. a user's bridge, or a leftover). */
  addLink(name: string, extra: Partial<LinkInfo> = {}): LinkInfo {
    const link: LinkInfo = { ifname: name, ifindex: this.#nextIndex++, mtu: 1500, flags: ['BROADCAST', 'MULTICAST'], ...extra };
    this.links.set(name, link);
    return link;
  }

  /** Forget recorded calls (e.g. after test setup), keep the model. */
  clearCalls(): void {
    this.calls.length = 0;
  }

  /** Calls of one command, optionally filtered by an argv predicate. */
  callsOf(cmd: string, pred: (c: RecordedCall) => boolean = () => true): RecordedCall[] {
    return this.calls.filter((c) => c.cmd === cmd && pred(c));
  }

  /** Calls that change something: everything but the read-only queries. */
  writes(): RecordedCall[] {
    return this.calls.filter((c) => !isQuery(c));
  }

  /** The nft transactions (`nft -f -`), leaving out listings and probes. */
  nftScripts(): RecordedCall[] {
    return this.callsOf('nft', (c) => c.args[0] === '-f');
  }

  /** All stdin fed to `ip -batch -`, joined. */
  batchInput(): string {
    return this.callsOf('ip', (c) => c.args.includes('-batch') && !isQuery(c))
      .map((c) => c.input ?? '')
      .join('');
  }

  async run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    // `wg syncconf IFACE FILE` reads its file: record what it would have read as the input.
    const input = cmd === 'wg' && args[0] === 'syncconf' ? readFileSync(args[2]!, 'utf8') : opts.input;
    const call: RecordedCall = { cmd, args: [...args], input, line: [cmd, ...args].join(' ') };
    this.calls.push(call);
    for (const rule of this.#fail) {
      if (rule.cmd !== cmd) continue;
      if (rule.args && !rule.args.every((a) => args.includes(a))) continue;
      if (rule.input !== undefined) {
        const text = opts.input ?? '';
        if (typeof rule.input === 'string' ? !text.includes(rule.input) : !rule.input.test(text)) continue;
      }
      if (rule.times !== undefined) {
        if (rule.times <= 0) continue;
        rule.times--;
      }
      throw new CommandError(cmd, args, rule.exitCode ?? 1, rule.stderr);
    }
    switch (cmd) {
      case 'ip':
        return this.#ip(args, opts.input ?? '');
      case 'nft':
        if (args[0] === '-j' && args[1] === 'list') throw new CommandError(cmd, args, 1, 'Error: No such file or directory\n');
        return ok();
      case 'iptables':
      case 'ip6tables':
        return this.#iptables(cmd, args);
      case 'iptables-restore':
      case 'ip6tables-restore': {
        const m = this.#ipt(cmd.replace('-restore', ''));
        const text = opts.input ?? '';
        if (text.includes(':TSNET-FORWARD')) m.chain = true;
        if (text.includes('-D FORWARD -j TSNET-FORWARD')) m.jumps = 0;
        if (text.includes('-X TSNET-FORWARD')) m.chain = false;
        return ok();
      }
      case 'wireguard-go':
        // The TUN device wireguard-go makes before it detaches.
        this.addLink(args[args.length - 1]!, { linkinfo: { info_kind: 'tun' } });
        return ok();
      default:
        return ok();
    }
  }

  /** per family: does TSNET-FORWARD exist, how many FORWARD jumps to it */
  readonly iptState = new Map<string, { chain: boolean; jumps: number }>();

  #ipt(family: string): { chain: boolean; jumps: number } {
    let m = this.iptState.get(family);
    if (!m) this.iptState.set(family, (m = { chain: false, jumps: 0 }));
    return m;
  }

  #iptables(family: string, args: readonly string[]): RunResult {
    const m = this.#ipt(family);
    const jumps = '-A FORWARD -j TSNET-FORWARD\n'.repeat(m.jumps);
    if (args.includes('-S')) {
      if (args.includes('FORWARD')) return ok(this.forwardRules + jumps);
      return ok(`-P INPUT ACCEPT\n-P FORWARD DROP\n-P OUTPUT ACCEPT\n${m.chain ? '-N TSNET-FORWARD\n' : ''}${this.forwardRules.split('\n').filter((l) => l.startsWith('-A')).map((l) => `${l}\n`).join('')}${jumps}`);
    }
    if (args.includes('-I') && args.includes('TSNET-FORWARD')) m.jumps++;
    if (args.includes('-D') && args.includes('TSNET-FORWARD')) m.jumps = Math.max(0, m.jumps - 1);
    return ok();
  }

  #ip(args: readonly string[], input: string): RunResult {
    const a = args.filter((x) => x !== '-force');
    if (a[0] === '-batch') {
      // -force keeps going past a failing line and fails at the end, as ip does.
      const failed: CommandError[] = [];
      for (const raw of input.split('\n')) {
        try {
          this.#applyBatchLine(raw.trim().split(/\s+/));
        } catch (err) {
          if (!args.includes('-force')) throw err;
          failed.push(err as CommandError);
        }
      }
      if (failed.length > 0) throw new CommandError('ip', args, 1, failed.map((e) => e.stderr).join(''));
      return ok();
    }
    if (a[0] === '-json') {
      // Queries may come as arguments or, for a warm spare, as one batch line.
      const rest = a.includes('-batch') ? input.trim().split(/\s+/) : a.slice(1).filter((x) => x !== '-details');
      if (rest[1] === 'route' && rest.includes('all')) return ok(JSON.stringify(rest[0] === '-6' ? this.routes6 : this.routes4));
      if (rest[1] === 'route' && rest.includes('default')) return ok(JSON.stringify(rest[0] === '-4' ? this.defaultRoutes4 : this.defaultRoutes6));
      if (rest[1] === 'route' && rest[3] === 'proto') {
        const v6 = rest[0] === '-6';
        const list = [...this.protoRoutes.values()].filter((r) => r.proto === rest[4] && r.dst.includes(':') === v6);
        // ip prints host routes without their length.
        return ok(JSON.stringify(list.map(({ proto: _p, ...r }) => ({ ...r, dst: r.dst.replace(v6 ? /\/128$/ : /\/32$/, '') }))));
      }
      if (rest[0] === 'link' && rest[2] === 'dev') {
        const link = this.links.get(rest[3]!);
        if (!link) throw new CommandError('ip', args, 1, NOT_FOUND(rest[3]!));
        return ok(JSON.stringify([link]));
      }
      if (rest[0] === 'link') return ok(JSON.stringify([...this.links.values()]));
      if (rest[0] === 'addr') return ok(JSON.stringify(rest[2] === 'dev' ? this.addrs.filter((a) => a.ifname === rest[3]) : this.addrs));
      return ok('[]');
    }
    if (a[0] === 'link' && a[1] === 'add' && a[2] === 'name') {
      this.#applyBatchLine([...a]);
      return ok();
    }
    if (a[0] === 'link' && a[1] === 'del') {
      const name = a[3]!;
      if (!this.#deleteLink(name)) throw new CommandError('ip', args, 1, `Cannot find device "${name}"\n`);
      return ok();
    }
    return ok();
  }

  #applyBatchLine(t: string[]): void {
    if (t[0] === 'route' && t.includes('proto')) {
      const proto = t[t.indexOf('proto') + 1]!;
      if (t[1] === 'del') {
        if (!this.protoRoutes.delete(t[2]!)) throw new CommandError('ip', ['-batch', '-'], 2, 'RTNETLINK answers: No such process\n');
      } else if (t[1] === 'replace') {
        const via = t.indexOf('via');
        this.protoRoutes.set(t[2]!, { dst: t[2]!, dev: t[t.indexOf('dev') + 1]!, ...(via > 0 ? { gateway: t[via + 1]! } : {}), proto });
      }
      return;
    }
    if (t[0] !== 'link') return;
    if (t[1] === 'add' && t[2] === 'name') {
      const name = t[3]!;
      const kind = t[t.indexOf('type') + 1];
      if (this.links.has(name)) throw new CommandError('ip', ['-batch', '-'], 1, 'RTNETLINK answers: File exists\n');
      this.addLink(name, { linkinfo: { info_kind: kind } });
      const peer = t.indexOf('peer');
      if (kind === 'veth' && peer > 0) {
        this.addLink(t[peer + 2]!, { linkinfo: { info_kind: 'veth' } });
        this.#peers.set(name, t[peer + 2]!).set(t[peer + 2]!, name);
      }
    } else if (t[1] === 'add' && t[2] === 'link') {
      // A child of a lower device: macvlan, ipvlan, vlan (`link add link P name X … type T [mode M]`).
      const lower = this.links.get(t[3]!);
      if (!lower) throw new CommandError('ip', ['-batch', '-'], 1, NOT_FOUND(t[3]!));
      const name = t[t.indexOf('name') + 1]!;
      if (this.links.has(name)) throw new CommandError('ip', ['-batch', '-'], 1, 'RTNETLINK answers: File exists\n');
      const kind = t[t.indexOf('type') + 1];
      const mode = t.indexOf('mode') > 0 ? t[t.indexOf('mode') + 1] : undefined;
      const mac = t.indexOf('address') > 0 ? t[t.indexOf('address') + 1] : lower.address;
      this.addLink(name, { link: lower.ifname, mtu: lower.mtu, ...(mac ? { address: mac } : {}), linkinfo: { info_kind: kind, ...(mode ? { info_data: { mode } } : {}) } });
    } else if (t[1] === 'set' && t[2] === 'dev') {
      const link = this.links.get(t[3]!);
      if (!link) throw new CommandError('ip', ['-batch', '-'], 1, NOT_FOUND(t[3]!));
      const alias = t.indexOf('alias');
      if (alias > 0) link.ifalias = t[alias + 1];
      const master = t.indexOf('master');
      if (master > 0) link.master = t[master + 1];
      if (t.includes('up') && !link.flags.includes('UP')) link.flags.push('UP');
    } else if (t[1] === 'del' && t[2] === 'dev') {
      this.#deleteLink(t[3]!);
    }
  }

  #deleteLink(name: string): boolean {
    if (!this.links.delete(name)) return false;
    const peer = this.#peers.get(name);
    if (peer !== undefined) {
      this.links.delete(peer);
      this.#peers.delete(peer);
      this.#peers.delete(name);
    }
    return true;
  }

  async writeSysctl(key: string, value: string): Promise<void> {
    this.sysctlWrites.push([key, value]);
    this.sysctls.set(key, value);
  }

  async readSysctl(key: string): Promise<string | undefined> {
    return this.sysctls.get(key);
  }
}

function ok(stdout = ''): RunResult {
  return { stdout, stderr: '' };
}

function isQuery(c: RecordedCall): boolean {
  if (c.cmd === 'ip') return c.args[0] === '-json';
  if (c.cmd === 'nft') return c.args[0] === '-j';
  if (c.cmd === 'iptables' || c.cmd === 'ip6tables') return c.args.includes('-S') || c.args.includes('--version');
  if (c.cmd === 'nft' && c.args[0] === 'list') return true;
  return false;
}

/** A logger that writes nothing (tests assert on behaviour, not on log lines). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** A fresh directory under the OS tmpdir, removed when the test ends. */
export async function tmpDir(t: { teardown(fn: () => unknown): void }, tag = 'unit'): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `tsnet-${tag}-`));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

let idCounter = 0;

/**
 * A 64-hex Docker-style ID. Deterministic (the sha256 of a counter), so a
 * run is reproducible, yet every call in a process gives a new ID.
 */
export function dockerId(): string {
  return createHash('sha256').update(`tsnet-test-id-${idCounter++}`).digest('hex');
}

/**
 * Run fn with a timer holding the event loop open. Store.close() waits for
 * the (unref'd) flock child to exit and nothing else keeps the loop alive at
 * teardown, so without this the process can end before close() settles (a
 * src bug, exercised on its own in test/unit/store.test.ts).
 */
export async function keepAlive<T>(fn: () => Promise<T>): Promise<T> {
  const timer = setInterval(() => undefined, 1000);
  try {
    return await fn();
  } finally {
    clearInterval(timer);
  }
}

/** Poll fn every 20 ms until it gives a value (not undefined or false); fail after ms. */
export async function until<T>(what: string, fn: () => T | undefined | false, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
