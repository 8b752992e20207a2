// One DNS query in, one decision out: a reply, a forward, or nothing.
// Everything about the wire that is not forwarding lives here, as pure
// functions over bytes, so malformed input is tested without sockets.
// Rules, decided so a container pointed at tsnet loses nothing:
// - Not a query (QR set), or under 12 bytes: dropped (never answer answers).
// - Does not decode, or not exactly one question: FORMERR; an opcode other
//   than QUERY: NOTIMP.
// - From an address that is no endpoint of this host: REFUSED (a resolver
//   then asks its next server; tsnet is nobody's open resolver).
// - A name the asker's networks know: A and AAAA records (both for ANY);
//   NOERROR with no records (NODATA) for a family it lacks or any other
//   type, never NXDOMAIN, which would deny the name's other types too.
// - PTR for an address the asker's networks hold: the name there.
// - Anything else, names of networks the asker is not on included (Docker
//   scopes names per network), goes to the host's resolvers unchanged.
import dnsPacket from 'dns-packet';
import { dnsName } from '../docker/engine.js';
import { parseReverseName } from '../net/cidr.js';
import type { NameDirectory, NameEntry } from './names.js';

/** Seconds clients may keep an answer: containers come and go. */
export const ANSWER_TTL = 10;
const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
export type Rcode = keyof typeof RCODE;
/** the UDP payload tsnet itself accepts and offers in EDNS */
export const EDNS_SIZE = 1232;

export type Decision =
  | { kind: 'reply'; packet: Buffer; result: 'answered' | 'nodata' | 'refused' | 'malformed' | 'notimp' }
  | { kind: 'forward'; name: string; type: string }
  | { kind: 'drop' };

export interface QueryContext {
  /** the address the query came from */
  source: string;
  /** the network whose gateway address received it */
  via?: string;
  transport: 'udp' | 'tcp';
  names: NameDirectory;
}

const QR = 0x8000;

/** A reply with only a header (and the question, when it could be read): for errors. */
export function errorReply(query: Buffer, rcode: Rcode, questionEnd?: number): Buffer {
  const q = questionEnd !== undefined ? query.subarray(12, questionEnd) : Buffer.alloc(0);
  const out = Buffer.alloc(12 + q.length);
  out.writeUInt16BE(query.readUInt16BE(0), 0);
  const flags = query.readUInt16BE(2);
  // QR, the query's opcode and RD, RA (tsnet recurses by forwarding), the code.
  out.writeUInt16BE(QR | (flags & 0x7900) | 0x0080 | RCODE[rcode], 2);
  out.writeUInt16BE(q.length > 0 ? 1 : 0, 4);
  q.copy(out, 12);
  return out;
}

/** End of the single question of a query (raw labels at offset 12), or undefined when it is not well formed. */
export function questionEnd(msg: Buffer): number | undefined {
  let off = 12;
  let total = 0;
  for (;;) {
    if (off >= msg.length) return undefined;
    const len = msg[off]!;
    off += 1;
    if (len === 0) break;
    // A question's name is first in the message: nothing earlier to point at.
    if ((len & 0xc0) !== 0) return undefined;
    total += len + 1;
    if (total > 255) return undefined;
    off += len;
  }
  return off + 4 <= msg.length ? off + 4 : undefined;
}

function shuffled<T>(xs: T[]): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/** The largest reply the client takes: 512 bytes over UDP unless EDNS says more (capped), 64 KiB over TCP. */
export function replyLimit(query: dnsPacket.DecodedPacket, transport: 'udp' | 'tcp'): number {
  if (transport === 'tcp') return 65535;
  const opt = (query.additionals ?? []).find((a): a is dnsPacket.OptAnswer => a.type === 'OPT');
  return opt ? Math.max(512, Math.min(opt.udpPayloadSize, EDNS_SIZE)) : 512;
}

function encodeReply(query: dnsPacket.DecodedPacket, limit: number, answers: dnsPacket.Answer[]): Buffer {
  const question = query.questions![0]!;
  const edns = (query.additionals ?? []).some((a) => a.type === 'OPT');
  const additionals: dnsPacket.Answer[] = edns ? [{ type: 'OPT', name: '.', udpPayloadSize: EDNS_SIZE, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }] : [];
  const flags = (query.flag_rd ? dnsPacket.RECURSION_DESIRED : 0) | dnsPacket.RECURSION_AVAILABLE;
  let kept = answers;
  for (;;) {
    const packet = dnsPacket.encode({ type: 'response', id: query.id ?? 0, flags: flags | (kept.length < answers.length ? dnsPacket.TRUNCATED_RESPONSE : 0), questions: [question], answers: kept, additionals });
    if (packet.length <= limit || kept.length === 0) return packet;
    kept = kept.slice(0, Math.max(0, kept.length - Math.ceil((packet.length - limit) / 16)));
  }
}

function addressAnswers(name: string, entries: NameEntry[], type: string): dnsPacket.Answer[] {
  const out: dnsPacket.Answer[] = [];
  const seen = new Set<string>();
  for (const e of shuffled(entries)) {
    for (const [t, addr] of [
      ['A', e.ipv4],
      ['AAAA', e.ipv6],
    ] as const) {
      if (!addr || (type !== t && type !== 'ANY') || seen.has(addr)) continue;
      seen.add(addr);
      out.push({ type: t, name, ttl: ANSWER_TTL, class: 'IN', data: addr });
    }
  }
  return out;
}

export function decide(msg: Buffer, ctx: QueryContext): Decision {
  if (msg.length < 12 || (msg.readUInt16BE(2) & QR) !== 0) return { kind: 'drop' };
  let query: dnsPacket.DecodedPacket;
  try {
    query = dnsPacket.decode(msg);
  } catch {
    return { kind: 'reply', packet: errorReply(msg, 'FORMERR'), result: 'malformed' };
  }
  const opcode = (msg.readUInt16BE(2) >> 11) & 0xf;
  if (opcode !== 0) return { kind: 'reply', packet: errorReply(msg, 'NOTIMP'), result: 'notimp' };
  const end = questionEnd(msg);
  if (query.questions?.length !== 1 || end === undefined) return { kind: 'reply', packet: errorReply(msg, 'FORMERR'), result: 'malformed' };
  const asker = ctx.names.asker(ctx.source, ctx.via);
  if (!asker) return { kind: 'reply', packet: errorReply(msg, 'REFUSED', end), result: 'refused' };
  const q = query.questions[0]!;
  // dns-packet names types it knows ('ANY' among them, though its typings leave that out), others UNKNOWN_<n>.
  const type = String(q.type);
  const limit = replyLimit(query, ctx.transport);
  const name = q.class === 'IN' ? dnsName(q.name) : undefined;
  if (name) {
    const networks = ctx.names.scope(asker);
    if (type === 'PTR') {
      const ip = parseReverseName(name);
      const hit = ip ? ctx.names.reverse(ip, networks) : undefined;
      if (hit) {
        const netName = ctx.names.networkName(hit.network);
        const target = netName ? `${hit.entry.names[0]}.${netName}` : hit.entry.names[0]!;
        return { kind: 'reply', packet: encodeReply(query, limit, [{ type: 'PTR', name: q.name, ttl: ANSWER_TTL, class: 'IN', data: target }]), result: 'answered' };
      }
    } else {
      const hit = ctx.names.resolve(name, networks);
      if (hit) {
        const answers = type === 'A' || type === 'AAAA' || type === 'ANY' ? addressAnswers(q.name, hit.entries, type) : [];
        return { kind: 'reply', packet: encodeReply(query, limit, answers), result: answers.length > 0 ? 'answered' : 'nodata' };
      }
    }
  }
  return { kind: 'forward', name: q.name, type };
}

/** Does an upstream's reply answer this query? Same ID, a response, the same one question (names compare case-insensitively). */
export function matchesQuery(query: Buffer, reply: Buffer): boolean {
  if (reply.length < 12 || reply.readUInt16BE(0) !== query.readUInt16BE(0) || (reply.readUInt16BE(2) & QR) === 0) return false;
  if (reply.readUInt16BE(4) !== 1 || query.readUInt16BE(4) !== 1) return false;
  const qEnd = questionEnd(query);
  const rEnd = questionEnd(reply);
  if (qEnd === undefined || rEnd === undefined || qEnd !== rEnd) return false;
  const fold = (b: number): number => (b >= 0x41 && b <= 0x5a ? b | 0x20 : b);
  // The name's bytes fold (length bytes are under 64, below 'A'); type and class must be equal.
  for (let i = 12; i < qEnd - 4; i++) if (fold(query[i]!) !== fold(reply[i]!)) return false;
  return query.subarray(qEnd - 4, qEnd).equals(reply.subarray(qEnd - 4, qEnd));
}

/** The reply code of a message (the low four bits of its flags). */
export function rcodeOf(msg: Buffer): number {
  return msg.length >= 4 ? msg.readUInt16BE(2) & 0xf : -1;
}

export { RCODE };
