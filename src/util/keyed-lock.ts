// Serialises work per key (a network ID, a pool ID) while letting different
// keys run in parallel. dockerd sends Join/Leave/Delete for one network
// concurrently (protocol.md §5.6); the store and the kernel must see them in
// order.
export class KeyedLock {
  readonly #tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = prev.then(() => mine);
    this.#tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      // Drop the entry once nobody queued behind us, so the map does not grow
      // with every network ever seen.
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }

  /** Run under several keys at once, taken in sorted order so two callers never deadlock. */
  async runAll<T>(keys: string[], fn: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(keys)].sort();
    const step = (i: number): Promise<T> => (i === sorted.length ? fn() : this.run(sorted[i]!, () => step(i + 1)));
    return step(0);
  }

  get size(): number {
    return this.#tails.size;
  }
}
