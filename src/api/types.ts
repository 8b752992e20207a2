// The remote driver protocol's request shapes (protocol.md §2, §4), with
// Docker's field names. Every request is checked against these before any
// handler runs; extra fields are tolerated (newer dockerds add some), wrong
// types and malformed IDs are not.
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { TsnetError, quote } from '../errors.js';

const Id = Type.String({ pattern: '^[0-9a-f]{64}$', description: 'a 64-character lowercase hex Docker ID' });
const OptStr = (description: string) =>
  Type.Optional(Type.Union([Type.String({ maxLength: 256, description }), Type.Null()], { description: `${description} (at most 256 characters) or null` }));
const OptMap = Type.Optional(Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()], { description: 'an object or null' }));

export const IPAMDataSchema = Type.Object({
  AddressSpace: Type.Optional(Type.Union([Type.String({ maxLength: 256 }), Type.Null()], { description: 'an address space name or null' })),
  Pool: Type.String({ maxLength: 64, description: 'a CIDR' }),
  Gateway: OptStr('an address in CIDR form'),
  AuxAddresses: Type.Optional(
    Type.Union([Type.Record(Type.String({ maxLength: 256 }), Type.String({ maxLength: 64 })), Type.Null()], { description: 'an object of name to CIDR, or null' }),
  ),
});
export type IPAMData = Static<typeof IPAMDataSchema>;

const IPAMList = Type.Optional(Type.Union([Type.Array(IPAMDataSchema, { maxItems: 16 }), Type.Null()], { description: 'a list of at most 16 IPAM data objects, or null' }));

export const CreateNetworkRequest = Type.Object({
  NetworkID: Id,
  Options: OptMap,
  IPv4Data: IPAMList,
  IPv6Data: IPAMList,
});
export type CreateNetworkRequest = Static<typeof CreateNetworkRequest>;

export const NetworkRequest = Type.Object({ NetworkID: Id });
export type NetworkRequest = Static<typeof NetworkRequest>;

export const GwAllocCheckRequest = Type.Object({ Options: OptMap });
export type GwAllocCheckRequest = Static<typeof GwAllocCheckRequest>;

export const EndpointInterfaceSchema = Type.Object({
  Address: OptStr('an IPv4 address in CIDR form'),
  AddressIPv6: OptStr('an IPv6 address in CIDR form'),
  MacAddress: OptStr('a MAC address like 02:42:ac:11:00:02'),
});

export const CreateEndpointRequest = Type.Object({
  NetworkID: Id,
  EndpointID: Id,
  Interface: Type.Optional(Type.Union([EndpointInterfaceSchema, Type.Null()])),
  Options: OptMap,
});
export type CreateEndpointRequest = Static<typeof CreateEndpointRequest>;

export const EndpointRequest = Type.Object({ NetworkID: Id, EndpointID: Id });
export type EndpointRequest = Static<typeof EndpointRequest>;

export const JoinRequest = Type.Object({
  NetworkID: Id,
  EndpointID: Id,
  SandboxKey: Type.Optional(Type.Union([Type.String({ maxLength: 4096 }), Type.Null()], { description: 'a path or null' })),
  Options: OptMap,
});
export type JoinRequest = Static<typeof JoinRequest>;

export const ProgramExternalConnectivityRequest = Type.Object({ NetworkID: Id, EndpointID: Id, Options: OptMap });
export type ProgramExternalConnectivityRequest = Static<typeof ProgramExternalConnectivityRequest>;

export const AllocateNetworkRequest = Type.Object({
  NetworkID: Id,
  Options: Type.Optional(Type.Union([Type.Record(Type.String(), Type.String()), Type.Null()], { description: 'an object of strings or null' })),
  IPv4Data: IPAMList,
  IPv6Data: IPAMList,
});
export type AllocateNetworkRequest = Static<typeof AllocateNetworkRequest>;

export const DiscoveryRequest = Type.Object({
  DiscoveryType: Type.Integer({ minimum: 0, maximum: 255 }),
  DiscoveryData: Type.Optional(Type.Unknown()),
});

// IPAM (protocol.md §4). Addresses in requests are plain IPs.
// PoolIDs are "<address space>/<CIDR>" (ipam.ts); nothing else was ever handed out.
const PoolId = Type.String({ maxLength: 80, pattern: '^tsnet-(local|global)/[0-9a-f.:]+/[0-9]{1,3}$', description: 'a PoolID returned by RequestPool (tsnet-local/CIDR)' });
const StrMap = Type.Optional(Type.Union([Type.Record(Type.String({ maxLength: 256 }), Type.String({ maxLength: 4096 })), Type.Null()], { description: 'an object of strings or null' }));

export const RequestPoolRequest = Type.Object({
  AddressSpace: Type.Optional(Type.String({ pattern: '^(tsnet-local|tsnet-global|)$', description: 'one of the address spaces GetDefaultAddressSpaces returned (tsnet-local, tsnet-global)' })),
  Pool: Type.Optional(Type.String({ maxLength: 64, description: 'a CIDR or ""' })),
  SubPool: Type.Optional(Type.String({ maxLength: 64, description: 'a CIDR or ""' })),
  Options: StrMap,
  V6: Type.Optional(Type.Boolean({ description: 'true or false' })),
});
export type RequestPoolRequest = Static<typeof RequestPoolRequest>;

export const ReleasePoolRequest = Type.Object({ PoolID: PoolId });
export type ReleasePoolRequest = Static<typeof ReleasePoolRequest>;

export const RequestAddressRequest = Type.Object({
  PoolID: PoolId,
  Address: Type.Optional(Type.String({ maxLength: 64, description: 'a plain IP address or ""' })),
  Options: StrMap,
});
export type RequestAddressRequest = Static<typeof RequestAddressRequest>;

export const ReleaseAddressRequest = Type.Object({
  PoolID: PoolId,
  Address: Type.String({ maxLength: 64, description: 'a plain IP address' }),
});
export type ReleaseAddressRequest = Static<typeof ReleaseAddressRequest>;

const compiled = new WeakMap<TSchema, ReturnType<typeof TypeCompiler.Compile>>();

function describe(schema: TSchema | undefined): string | undefined {
  if (!schema) return undefined;
  if (typeof schema.description === 'string') return schema.description;
  return undefined;
}

interface Failure {
  path: string;
  schema: TSchema | undefined;
  value: unknown;
  message: string;
}

/**
 * The most specific failure. TypeBox reports a bad field inside an
 * "object or null" union as the union failing; descend into the object
 * member so the message names Interface.Address, not Interface.
 */
function deepestError(check: ReturnType<typeof TypeCompiler.Compile>, body: unknown): Failure {
  const errors = [...check.Errors(body)].sort((a, b) => b.path.length - a.path.length);
  let f: Failure = errors[0] ? { path: errors[0].path, schema: errors[0].schema, value: errors[0].value, message: errors[0].message } : { path: '', schema: undefined, value: body, message: 'invalid' };
  for (let depth = 0; depth < 8; depth++) {
    const members = (f.schema as { anyOf?: TSchema[] } | undefined)?.anyOf;
    const v = f.value;
    if (!members || v === null || typeof v !== 'object') break;
    const member = members.find((m) => (Array.isArray(v) ? m.type === 'array' : m.type === 'object'));
    if (!member) break;
    const inner = [...TypeCompiler.Compile(member).Errors(v)].sort((a, b) => b.path.length - a.path.length)[0];
    if (!inner) break;
    f = { path: `${f.path}${inner.path}`, schema: inner.schema, value: inner.value, message: inner.message };
  }
  return f;
}

/** Validate a request body; the error names the field, what it must be, and what it was. */
export function parseRequest<T extends TSchema>(schema: T, body: unknown, method: string): Static<T> {
  let check = compiled.get(schema);
  if (!check) {
    check = TypeCompiler.Compile(schema);
    compiled.set(schema, check);
  }
  if (check.Check(body)) return body as Static<T>;
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `${method}: the request body must be a JSON object, got ${quote(body)}`);
  }
  const first = deepestError(check, body);
  const field = first.path ? first.path.replace(/^\//, '').replace(/\//g, '.') : '(body)';
  const missing = first.value === undefined;
  const what = describe(first.schema) ?? first.message;
  const detail = missing ? `${field} is required (${what})` : `${field}: must be ${what}, got ${quote(first.value)}`;
  throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `${method}: invalid request: ${detail}`);
}
