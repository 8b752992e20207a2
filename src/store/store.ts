// The embedded JSON store. The whole state lives in memory; commit() makes it
// durable. Design notes:
// - Atomic replace: write state.json.tmp, fsync it, keep the previous good
//   file as state.prev.json (a hard link, so state.json never disappears),
//   rename the temp over state.json, fsync the directory. A crash at any
//   point leaves either the old or the new file in place, never a torn one.
// - Group commit: callers that arrive while a write is in flight share the
//   next write, so durability costs one fsync per batch, not per request.
// - Every file carries a checksum of its state and a generation number;
//   load() checks both and falls back to the previous copy when the current
//   one is damaged, telling the caller which copy it got so the service can
//   refuse to hand out addresses it cannot account for.
import { createHash } from 'node:crypto';
import { promises as fs, constants as fsc } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { TsnetError } from '../errors.js';
import { lockStateDir, type DirLock } from './lock.js';
import { FileSchema, SCHEMA_VERSION, StateSchema, emptyState, type State } from './schema.js';

const fileCheck = TypeCompiler.Compile(FileSchema);
const stateCheck = TypeCompiler.Compile(StateSchema);

export type LoadSource = 'current' | 'previous' | 'empty';

export interface LoadResult {
  state: State;
  source: LoadSource;
  generation: number;
  problems: string[];
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

/** Upgrade older on-disk layouts; version 1 is the first, so this only fills defaults. */
function migrate(_version: number, state: unknown): unknown {
  return state;
}

export interface StoreOptions {
  dir: string;
  log: Logger;
  /** skip fsync (tests on tmpfs only) */
  noSync?: boolean;
}

export class Store {
  readonly dir: string;
  readonly file: string;
  readonly prevFile: string;
  #state: State = emptyState();
  #generation = 0;
  #lock: DirLock | undefined;
  #log: Logger;
  #noSync: boolean;
  #waiting: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  #writing = false;
  #closed = false;
  /** writes completed, for tests and the benchmark */
  writes = 0;
  /** failure injection for tests: a function that may throw before the rename */
  beforeRename: (() => void) | undefined;

  constructor(opts: StoreOptions) {
    this.dir = opts.dir;
    this.file = path.join(opts.dir, 'state.json');
    this.prevFile = path.join(opts.dir, 'state.prev.json');
    this.#log = opts.log.child({ component: 'store' });
    this.#noSync = opts.noSync ?? false;
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
      return result;
    } catch (err) {
      await this.#lock.release();
      this.#lock = undefined;
      throw err;
    }
  }

  async load(): Promise<LoadResult> {
    const problems: string[] = [];
    const tryRead = async (file: string): Promise<{ state: State; generation: number } | 'missing' | string> => {
      let text: string;
      try {
        text = await fs.readFile(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
        return `cannot read: ${(err as Error).message}`;
      }
      return decodeFile(text);
    };
    const current = await tryRead(this.file);
    if (typeof current === 'object') return { ...current, source: 'current', problems };
    const prev = await tryRead(this.prevFile);
    if (current === 'missing' && prev === 'missing') return { state: emptyState(), generation: 0, source: 'empty', problems };
    if (current !== 'missing') problems.push(`${this.file}: ${current}`);
    if (typeof prev === 'object') {
      if (current === 'missing') problems.push(`${this.file} is missing but ${this.prevFile} exists`);
      return { ...prev, source: 'previous', problems };
    }
    if (prev !== 'missing') problems.push(`${this.prevFile}: ${prev}`);
    throw new TsnetError(
      'TSNET_ERR_STORE_CORRUPT',
      `no usable state in ${this.dir}: ${problems.join('; ')}. tsnet will not start with an empty store over existing state; ` +
        `restore a backup of state.json, or move the directory aside to start afresh (networks must then be re-created)`,
    );
  }

  /** Make the current in-memory state durable; resolves once a write that includes it has hit the disk. */
  commit(): Promise<void> {
    if (this.#closed) return Promise.reject(new TsnetError('TSNET_ERR_STORE', 'store is closed'));
    return new Promise<void>((resolve, reject) => {
      this.#waiting.push({ resolve, reject });
      if (!this.#writing) void this.#drain();
    });
  }

  /**
   * Schedule a write without waiting for it, for hints whose loss in a crash
   * costs nothing (a sandbox key, say). It rides along with the next commit.
   */
  commitLazy(): void {
    if (this.#closed) return;
    this.commit().catch((err: unknown) => this.#log.warn({ err }, 'background state write failed'));
  }

  async #drain(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#waiting.length > 0) {
        const batch = this.#waiting;
        this.#waiting = [];
        try {
          await this.#write();
          for (const w of batch) w.resolve();
        } catch (err) {
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
    const tmp = `${this.file}.tmp`;
    const fh = await fs.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC, 0o600);
    try {
      await fh.writeFile(text, 'utf8');
      if (!this.#noSync) await fh.datasync();
    } finally {
      await fh.close();
    }
    this.beforeRename?.();
    // Keep the last good copy: link state.json to state.prev.json atomically.
    try {
      await fs.rm(`${this.prevFile}.tmp`, { force: true });
      await fs.link(this.file, `${this.prevFile}.tmp`);
      await fs.rename(`${this.prevFile}.tmp`, this.prevFile);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    await fs.rename(tmp, this.file);
    if (!this.#noSync) {
      const dh = await fs.open(this.dir, fsc.O_RDONLY);
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
    }
    this.#generation = generation;
    this.writes++;
  }

  /** Wait for pending writes, then release the directory lock. */
  async close(): Promise<void> {
    if (this.#closed) return;
    if (this.#waiting.length > 0 || this.#writing) await this.commit().catch(() => undefined);
    this.#closed = true;
    await this.#lock?.release();
    this.#lock = undefined;
  }
}
