// The embedded JSON store. The whole state lives in memory; commit() makes it
// durable. Design notes:
// - Atomic replace: write state.json.tmp, fsync it, rename it over
//   state.json, fsync the directory. A crash at any point leaves either the
//   old or the new file in place, never a torn one.
// - A second copy: every state.json is first written, the same way, as
//   state.prev.json (its own blocks, not a link: damage to one file leaves
//   the other). So the copy is never older than state.json and the journal
//   continues it too: a damaged state.json is rebuilt from the copy and the
//   journal with nothing lost ('recovered'), provided the damaged file's
//   generation can still be read and is not newer than the copy's.
// - Group commit: callers that arrive while a write is in flight share the
//   next write, so durability costs one fsync per batch, not per request.
// - Every file carries a checksum of its state and a generation number;
//   load() checks both and falls back to the previous copy when the current
//   one is damaged, telling the caller which copy it got so the service can
//   refuse to hand out addresses it cannot account for.
// - Journal: rewriting the whole file costs what the whole state weighs
//   (about 7 ms for 1,000 endpoints: JSON, checksum, write, fsync), and a
//   container start commits three times. A commit that names the records it
//   changed (commit([['endpoints', id]])) appends just those, as one
//   checksummed line of state.journal, fsynced like the file. The journal is
//   folded into a new state.json once it outweighs it (so the cost per
//   change stays flat, amortized), by any commit that names nothing, and at
//   open. Lines carry the generation they make; load() replays those
//   following the state file's, ignores a torn last line (a write that was
//   never acknowledged), and treats a damaged line before the end like a
//   damaged file: what it held is unknown, so the load is reported as a
//   fallback ('previous') and allocation pauses.
import { createHash } from 'node:crypto';
import { promises as fs, constants as fsc } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { TsnetError } from '../errors.js';
import { lockStateDir, type DirLock } from './lock.js';
import { FileSchema, SCHEMA_VERSION, StateSchema, emptyState, type State } from './schema.js';

const fileCheck = TypeCompiler.Compile(FileSchema);
const stateCheck = TypeCompiler.Compile(StateSchema);

/** 'recovered': state.json was damaged and rebuilt whole from its copy; 'previous': changes may be lost. */
export type LoadSource = 'current' | 'recovered' | 'previous' | 'empty';

/** A record, or a value inside one, by keys from the state's root: ['endpoints', id], ['pools', id, 'allocations', '10.0.0.2']. */
export type StorePath = readonly string[];

export interface LoadResult {
  state: State;
  source: LoadSource;
  generation: number;
  problems: string[];
  /** damaged files open() moves aside (to NAME.bad) before writing the state loaded */
  setAside: string[];
}

function checksum(stateJson: string): string {
  return createHash('sha256').update(stateJson).digest('hex');
}

export function encodeFile(state: State, generation: number): string {
  const stateJson = JSON.stringify(state);
  // The state is spliced in verbatim so the checksum covers exactly those bytes.
  const head = JSON.stringify({ schemaVersion: SCHEMA_VERSION, generation, writtenAt: new Date().toISOString(), checksum: checksum(stateJson) });
  return `${head.slice(0, -1)},"state":${stateJson}}\n`;
}

/** Decode one state file; returns a reason string instead of throwing. */
export function decodeFile(text: string): { state: State; generation: number } | string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return `not valid JSON (${(err as Error).message}); the file is truncated or damaged`;
  }
  if (!fileCheck.Check(parsed)) return 'not a tsnet state file (header fields missing)';
  if (parsed.schemaVersion > SCHEMA_VERSION) return `written by a newer tsnet (schema ${parsed.schemaVersion} > ${SCHEMA_VERSION})`;
  const idx = text.indexOf(',"state":');
  const stateJson = idx >= 0 ? text.slice(idx + 9, text.trimEnd().length - 1) : '';
  if (checksum(stateJson) !== parsed.checksum) return 'checksum mismatch; the file was modified or damaged';
  const state = migrate(parsed.schemaVersion, parsed.state);
  if (!stateCheck.Check(state)) {
    const first = [...stateCheck.Errors(state)][0];
    return `state does not fit the schema at ${first?.path ?? '?'}: ${first?.message ?? '?'}`;
  }
  return { state, generation: parsed.generation };
}

/** The generation a state file or journal text says it has, read from its head alone (for a file that fails its checksum). */
export function headGeneration(text: string): number | undefined {
  const m = /^\{"(?:schemaVersion":\d+,"generation|g)":(\d+),/.exec(text);
  return m ? Number(m[1]) : undefined;
}

/**
 * Upgrade older layouts to this one. Structural and idempotent, because it
 * also runs after a journal replay: journal lines hold whole records, and a
 * journal written by an older tsnet follows its state file.
 * 1 -> 2: an overlay's cluster addressing (poolId, range, blocks, claims)
 * moves into the network's `cluster` record, and a pool's `overlayNetwork`
 * becomes `clusterNetwork`.
 */
export function migrate(_version: number, state: unknown): unknown {
  if (!isObject(state)) return state;
  for (const net of Object.values(isObject(state.networks) ? state.networks : {})) {
    const o = isObject(net) ? net.overlay : undefined;
    if (!isObject(net) || !isObject(o) || !('blocks' in o || 'claims' in o || 'range' in o || 'poolId' in o)) continue;
    if (o.mode === 'cluster' && typeof o.poolId === 'string' && net.cluster === undefined) {
      net.cluster = { subnet: o.subnet, pools: [{ poolId: o.poolId, range: o.range ?? o.subnet, blocks: o.blocks ?? [], claims: o.claims ?? [] }] };
    }
    delete o.poolId;
    delete o.range;
    delete o.blocks;
    delete o.claims;
  }
  for (const pool of Object.values(isObject(state.pools) ? state.pools : {})) {
    if (!isObject(pool) || !('overlayNetwork' in pool)) continue;
    if (pool.clusterNetwork === undefined) pool.clusterNetwork = pool.overlayNetwork;
    delete pool.overlayNetwork;
  }
  return state;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** One journal line: the values at the given paths after a commit (a path alone: deleted). */
export function encodeJournalLine(state: State, generation: number, paths: readonly StorePath[]): string {
  const ops = paths.map((p) => {
    const v = valueAt(state, p);
    return v === undefined ? [p] : [p, v];
  });
  const opsJson = JSON.stringify(ops);
  return `{"g":${generation},"c":"${checksum(opsJson)}","ops":${opsJson}}\n`;
}

function valueAt(state: State, path: StorePath): unknown {
  let v: unknown = state;
  for (const k of path) {
    if (v === null || typeof v !== 'object' || !Object.hasOwn(v, k)) return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

const UNSAFE_KEY = new Set(['__proto__', 'constructor', 'prototype']);

/** Apply one line's operations; returns a reason instead of throwing. */
function applyOps(state: State, ops: unknown): string | undefined {
  if (!Array.isArray(ops)) return 'operations are not a list';
  for (const op of ops) {
    if (!Array.isArray(op) || (op.length !== 1 && op.length !== 2)) return 'malformed operation';
    const [path, value] = op as [unknown, unknown];
    if (!Array.isArray(path) || path.length < 2 || !path.every((k) => typeof k === 'string' && !UNSAFE_KEY.has(k))) return 'malformed path';
    let parent: unknown = state;
    for (const k of path.slice(0, -1) as string[]) {
      parent = parent !== null && typeof parent === 'object' && Object.hasOwn(parent, k) ? (parent as Record<string, unknown>)[k] : undefined;
      if (parent === null || typeof parent !== 'object') return `path ${path.join('/')} leads nowhere`;
    }
    const leaf = path[path.length - 1] as string;
    if (op.length === 1) delete (parent as Record<string, unknown>)[leaf];
    else (parent as Record<string, unknown>)[leaf] = value;
  }
  return undefined;
}

export interface JournalReplay {
  generation: number;
  applied: number;
  /** a damaged line before the end: what followed it is lost */
  damage?: string;
  /** a damaged last line: a write that never completed */
  tornTail: boolean;
}

/** Replay journal text onto a state loaded at `generation` (mutates it). */
export function replayJournal(state: State, generation: number, text: string): JournalReplay {
  const lines = text.split('\n');
  const complete = text.endsWith('\n') ? lines.slice(0, -1) : lines;
  const r: JournalReplay = { generation, applied: 0, tornTail: false };
  for (let i = 0; i < complete.length; i++) {
    const last = i === complete.length - 1;
    const bad = (why: string): JournalReplay => {
      if (last) r.tornTail = true;
      else r.damage = `line ${i + 1}: ${why}`;
      return r;
    };
    const line = complete[i]!;
    if (line === '') return bad('empty line');
    let parsed: { g?: unknown; c?: unknown };
    try {
      parsed = JSON.parse(line) as { g?: unknown; c?: unknown };
    } catch {
      return bad('not valid JSON');
    }
    const idx = line.indexOf(',"ops":');
    if (typeof parsed.g !== 'number' || typeof parsed.c !== 'string' || idx < 0) return bad('not a journal line');
    if (checksum(line.slice(idx + 7, -1)) !== parsed.c) return bad('checksum mismatch');
    if (parsed.g <= r.generation) continue; // already in the state file
    if (parsed.g !== r.generation + 1) return bad(`generation ${parsed.g} does not follow ${r.generation}`);
    const why = applyOps(state, (parsed as { ops?: unknown }).ops);
    if (why) return bad(why);
    r.generation = parsed.g;
    r.applied++;
  }
  return r;
}

export interface StoreOptions {
  dir: string;
  log: Logger;
  /** skip fsync (tests on tmpfs only) */
  noSync?: boolean;
  /** fold the journal into state.json once it holds this many bytes and more than state.json (default 64 KiB) */
  journalMinBytes?: number;
}

export class Store {
  readonly dir: string;
  readonly file: string;
  readonly prevFile: string;
  readonly journalFile: string;
  #state: State = emptyState();
  #generation = 0;
  #lock: DirLock | undefined;
  #log: Logger;
  #noSync: boolean;
  #waiting: Array<{ resolve: () => void; reject: (e: unknown) => void; paths: readonly StorePath[] | undefined }> = [];
  #writing = false;
  #closed = false;
  #journal: FileHandle | undefined;
  #journalBytes = 0;
  /** size of the last state.json written or loaded; 0: none yet, the next write is a full one */
  #fileBytes = 0;
  readonly #journalMinBytes: number;
  /** writes completed (state.json rewrites and journal appends), for tests and the benchmark */
  writes = 0;
  /** of those, journal appends */
  appends = 0;
  /** full writes that folded a non-empty journal into state.json */
  folds = 0;
  /** batches whose write failed, and the last failure (cleared by the next good write), for metrics and tsnetctl doctor */
  writeFailures = 0;
  lastWriteError: string | undefined;
  /** failure injection for tests: a function that may throw before the rename (or before a journal append) */
  beforeRename: (() => void) | undefined;
  /** failure injection for tests: may throw after a journal line is written, before its fsync */
  afterJournalWrite: (() => void) | undefined;
  /** failure injection for tests: may throw after the copy is replaced, before state.json is */
  beforeSecondRename: (() => void) | undefined;

  constructor(opts: StoreOptions) {
    this.dir = opts.dir;
    this.file = path.join(opts.dir, 'state.json');
    this.prevFile = path.join(opts.dir, 'state.prev.json');
    this.journalFile = path.join(opts.dir, 'state.journal');
    this.#log = opts.log.child({ component: 'store' });
    this.#noSync = opts.noSync ?? false;
    this.#journalMinBytes = opts.journalMinBytes ?? 64 * 1024;
  }

  get state(): State {
    return this.#state;
  }

  get generation(): number {
    return this.#generation;
  }

  /** Take the directory lock and load the newest good copy. */
  async open(): Promise<LoadResult> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    this.#lock = await lockStateDir(path.join(this.dir, 'tsnet.lock'));
    try {
      const result = await this.load();
      this.#state = result.state;
      this.#generation = result.generation;
      const journalled = (await fs.stat(this.journalFile).catch(() => undefined))?.size ?? 0;
      // What load() found damaged stays beside the store for an operator.
      for (const f of result.setAside) {
        await fs.rename(f, `${f}.bad`).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err;
        });
      }
      if (result.source === 'current') this.#fileBytes = (await fs.stat(this.file)).size;
      if (!result.setAside.includes(this.journalFile)) this.#journalBytes = journalled;
      // Fold the replayed journal (and any torn tail) into a fresh state.json,
      // or write the state loaded over the files set aside.
      if (this.#journalBytes > 0 || result.setAside.length > 0) await this.commit();
      return result;
    } catch (err) {
      await this.#lock.release();
      this.#lock = undefined;
      throw err;
    }
  }

  async load(): Promise<LoadResult> {
    const problems: string[] = [];
    const read = async (file: string): Promise<{ text: string; decoded: ReturnType<typeof decodeFile> } | 'missing' | string> => {
      try {
        const text = await fs.readFile(file, 'utf8');
        return { text, decoded: decodeFile(text) };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
        return `cannot read: ${(err as Error).message}`;
      }
    };
    const journal = await fs.readFile(this.journalFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return '';
      throw err;
    });
    const current = await read(this.file);
    if (typeof current === 'object' && typeof current.decoded === 'object') {
      const r = this.#replay(current.text, current.decoded, journal);
      if (!r.damage) return { state: r.state, generation: r.generation, source: 'current', problems, setAside: [] };
      // Changes from the damage on are lost, so addresses handed out in
      // them are unknown: reported like an unproven copy, allocation pauses.
      problems.push(`${this.journalFile}: ${r.damage}`);
      return { state: r.state, generation: r.generation, source: 'previous', problems, setAside: [this.journalFile] };
    }
    const prev = await read(this.prevFile);
    if (current === 'missing' && prev === 'missing') {
      // A journal continues a file; with none, its lines cannot be applied.
      return { state: emptyState(), generation: 0, source: 'empty', problems, setAside: journal === '' ? [] : [this.journalFile] };
    }
    problems.push(current === 'missing' ? `${this.file} is missing` : `${this.file}: ${typeof current === 'object' ? current.decoded : current}`);
    if (typeof prev === 'object' && typeof prev.decoded === 'object') {
      const copy = prev.decoded;
      const r = this.#replay(prev.text, copy, journal);
      if (r.damage) problems.push(`${this.journalFile}: ${r.damage}`);
      // The copy is written before state.json with the same generation, so
      // it holds everything unless the lost file says it was newer, or
      // cannot say (then the journal's first line, which follows it, tells).
      const firstLine = headGeneration(journal);
      const lost = (typeof current === 'object' ? headGeneration(current.text) : undefined) ?? (firstLine === undefined ? undefined : firstLine - 1);
      const whole = !r.damage && lost !== undefined && lost <= copy.generation;
      if (!whole && !r.damage) {
        problems.push(
          lost === undefined
            ? `the generation of the lost ${path.basename(this.file)} cannot be read, so whether ${this.prevFile} holds every change is unknown`
            : `the lost ${path.basename(this.file)} had generation ${lost}, ${this.prevFile} only ${copy.generation}`,
        );
      }
      const setAside = [this.file, ...(r.damage ? [this.journalFile] : [])];
      return { state: r.state, generation: r.generation, source: whole ? 'recovered' : 'previous', problems, setAside };
    }
    if (prev !== 'missing') problems.push(`${this.prevFile}: ${typeof prev === 'object' ? prev.decoded : prev}`);
    throw new TsnetError(
      'TSNET_ERR_STORE_CORRUPT',
      `no usable state in ${this.dir}: ${problems.join('; ')}. tsnet will not start with an empty store over existing state; ` +
        `restore a backup of state.json, or move the directory aside to start afresh (networks must then be re-created)`,
    );
  }

  /**
   * Replay the journal onto a decoded file. A damaged line, or a result that
   * no longer fits the schema (then the file alone is used), is damage.
   */
  #replay(text: string, decoded: { state: State; generation: number }, journal: string): { state: State; generation: number; damage?: string } {
    if (journal === '') return decoded;
    const r = replayJournal(decoded.state, decoded.generation, journal);
    migrate(SCHEMA_VERSION, decoded.state);
    if (r.tornTail) this.#log.warn({ journal: this.journalFile }, 'the last journal line is incomplete (a write cut short); ignoring it');
    if (stateCheck.Check(decoded.state)) return { state: decoded.state, generation: r.generation, ...(r.damage ? { damage: r.damage } : {}) };
    const first = [...stateCheck.Errors(decoded.state)][0];
    const damage = `${r.damage ? `${r.damage}; ` : ''}the replayed state does not fit the schema at ${first?.path ?? '?'}: ${first?.message ?? '?'}; using the file without its journal`;
    return { ...(decodeFile(text) as { state: State; generation: number }), damage };
  }

  /**
   * Make the in-memory state durable; resolves once a write that includes it
   * has hit the disk. With `paths`, only the values at those paths (records,
   * or values inside them) are written, as a journal line: the caller vouches
   * that nothing else changed. Without, the whole state is.
   */
  commit(paths?: readonly StorePath[]): Promise<void> {
    if (this.#closed) return Promise.reject(new TsnetError('TSNET_ERR_STORE', 'store is closed'));
    return new Promise<void>((resolve, reject) => {
      this.#waiting.push({ resolve, reject, paths });
      if (!this.#writing) void this.#drain();
    });
  }

  /**
   * Schedule a write without waiting for it, for hints whose loss in a crash
   * costs nothing (a sandbox key, say). It rides along with the next commit.
   */
  commitLazy(paths?: readonly StorePath[]): void {
    if (this.#closed) return;
    this.commit(paths).catch((err: unknown) => this.#log.warn({ err }, 'background state write failed'));
  }

  async #drain(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#waiting.length > 0) {
        const batch = this.#waiting;
        this.#waiting = [];
        try {
          const paths: StorePath[] = [];
          let whole = this.#fileBytes === 0 || this.#journalBytes >= Math.max(this.#journalMinBytes, this.#fileBytes);
          for (const w of batch) {
            if (w.paths) paths.push(...w.paths);
            else whole = true;
          }
          if (whole) await this.#write();
          else await this.#append(paths);
          this.lastWriteError = undefined;
          for (const w of batch) w.resolve();
        } catch (err) {
          this.writeFailures++;
          this.lastWriteError = (err as Error).message;
          this.#log.error({ err }, 'state write failed');
          const wrapped = new TsnetError('TSNET_ERR_STORE', `could not write ${this.file}: ${(err as Error).message}`, { cause: err });
          for (const w of batch) w.reject(wrapped);
        }
      }
    } finally {
      this.#writing = false;
    }
  }

  async #write(): Promise<void> {
    const generation = this.#generation + 1;
    const text = encodeFile(this.#state, generation);
    this.beforeRename?.();
    // The copy first, so it is never older than state.json.
    await this.#replace(this.prevFile, text);
    try {
      this.beforeSecondRename?.();
      await this.#replace(this.file, text);
    } catch (err) {
      // The copy may now hold this generation while state.json and the
      // journal do not: an appended line would reuse the generation and the
      // copy would seem to hold it. The next write is a whole one.
      this.#fileBytes = 0;
      throw err;
    }
    if (!this.#noSync) {
      const dh = await fs.open(this.dir, fsc.O_RDONLY);
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
    }
    this.#generation = generation;
    this.#fileBytes = text.length;
    this.writes++;
    // Everything journalled is in the file now (a crash before this point
    // leaves lines at or below its generation, which load() skips).
    if (this.#journalBytes > 0) this.folds++;
    if (this.#journalBytes > 0 || this.#journal) {
      const jh = await this.#openJournal();
      await jh.truncate(0);
      if (!this.#noSync) await jh.datasync();
      this.#journalBytes = 0;
    }
  }

  /** Write a file's new text beside it, fsync, rename it over (the directory is synced by the caller). */
  async #replace(file: string, text: string): Promise<void> {
    const tmp = `${file}.tmp`;
    const fh = await fs.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC, 0o600);
    try {
      await fh.writeFile(text, 'utf8');
      if (!this.#noSync) await fh.datasync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, file);
  }

  async #openJournal(): Promise<FileHandle> {
    this.#journal ??= await fs.open(this.journalFile, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_APPEND, 0o600);
    return this.#journal;
  }

  async #append(paths: readonly StorePath[]): Promise<void> {
    const seen = new Set<string>();
    const unique = paths.filter((p) => {
      const k = p.join('\u0000');
      return seen.has(k) ? false : (seen.add(k), true);
    });
    const generation = this.#generation + 1;
    const line = encodeJournalLine(this.#state, generation, unique);
    this.beforeRename?.();
    const jh = await this.#openJournal();
    try {
      await jh.write(line);
      this.afterJournalWrite?.();
      if (!this.#noSync) await jh.datasync();
    } catch (err) {
      // A line that may be on disk in part must not stay in front of the
      // next ones (load would take it for damage): cut the journal back.
      // If even that fails, the next commit rewrites state.json instead.
      await jh.truncate(this.#journalBytes).catch(() => (this.#fileBytes = 0));
      throw err;
    }
    this.#generation = generation;
    this.#journalBytes += Buffer.byteLength(line);
    this.writes++;
    this.appends++;
  }

  /** Wait for pending writes, then release the directory lock. */
  async close(): Promise<void> {
    if (this.#closed) return;
    if (this.#waiting.length > 0 || this.#writing) await this.commit().catch(() => undefined);
    this.#closed = true;
    await this.#journal?.close().catch(() => undefined);
    this.#journal = undefined;
    await this.#lock?.release();
    this.#lock = undefined;
  }
}
