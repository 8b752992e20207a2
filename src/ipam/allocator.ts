// Address allocation inside one pool: pure logic, no I/O. The record's
// `allocations` map (address text -> allocation) is the durable truth; this
// class keeps a bigint index beside it so lookups and scans do not re-parse
// text. Dynamic addresses come from the ip-range (SubPool) when one is set,
// lowest free first, as Docker's default IPAM does, so a user switching
// drivers sees the same addresses.
import { TsnetError } from '../errors.js';
import type { Allocation, PoolRecord } from '../store/schema.js';
import { contains, formatIp, lastAddress, parseIp, parsePrefix, prefixSize, type Prefix } from '../net/cidr.js';

export class PoolAllocator {
  readonly record: PoolRecord;
  readonly prefix: Prefix;
  readonly range: Prefix;
  readonly #used = new Set<bigint>();

  constructor(record: PoolRecord) {
    const prefix = parsePrefix(record.pool);
    if (!prefix) throw new TsnetError('TSNET_ERR_STORE_CORRUPT', `pool ${record.id} has an invalid CIDR ${record.pool}`);
    const range = record.subPool ? parsePrefix(record.subPool) : prefix;
    if (!range) throw new TsnetError('TSNET_ERR_STORE_CORRUPT', `pool ${record.id} has an invalid SubPool ${record.subPool}`);
    this.record = record;
    this.prefix = prefix;
    this.range = range;
    for (const text of Object.keys(record.allocations)) {
      const ip = parseIp(text);
      if (ip) this.#used.add(ip.value);
    }
  }

  get size(): number {
    return this.#used.size;
  }

  /** The network address, and for IPv4 the broadcast address, are never handed out. */
  isReserved(value: bigint): boolean {
    if (value === this.prefix.base) return !(this.prefix.v6 === false && this.prefix.bits >= 31);
    if (!this.prefix.v6 && this.prefix.bits <= 30 && value === lastAddress(this.prefix)) return true;
    return false;
  }

  has(value: bigint): boolean {
    return this.#used.has(value);
  }

  owner(value: bigint): Allocation | undefined {
    return this.record.allocations[formatIp({ v6: this.prefix.v6, value })];
  }

  inPool(value: bigint): boolean {
    return contains(this.prefix, { v6: this.prefix.v6, value });
  }

  /** Lowest free address in the range (or the whole pool), or undefined when full. */
  firstFree(inRange: Prefix = this.range): bigint | undefined {
    const first = inRange.base;
    const last = lastAddress(inRange);
    // Cheap exhaustion test before scanning: count what is already used in range.
    let usable = prefixSize(inRange);
    for (const v of [first, last]) if (this.isReserved(v)) usable--;
    let usedInRange = 0n;
    if (inRange === this.prefix) usedInRange = BigInt(this.#used.size);
    else for (const v of this.#used) if (v >= first && v <= last) usedInRange++;
    if (usedInRange >= usable) return undefined;
    for (let v = first; v <= last; v++) {
      if (!this.#used.has(v) && !this.isReserved(v)) return v;
    }
    return undefined;
  }

  take(value: bigint, alloc: Allocation): string {
    const text = formatIp({ v6: this.prefix.v6, value });
    this.#used.add(value);
    this.record.allocations[text] = alloc;
    return text;
  }

  release(value: bigint): boolean {
    const text = formatIp({ v6: this.prefix.v6, value });
    const had = this.#used.delete(value);
    delete this.record.allocations[text];
    return had;
  }
}
