// src/api/types.ts parseRequest: a bad request is refused with a message that
// names the field, says what it must be and shows what was sent.
import t from 'tap';
import {
  CreateEndpointRequest,
  CreateNetworkRequest,
  EndpointRequest,
  JoinRequest,
  NetworkRequest,
  ReleaseAddressRequest,
  RequestAddressRequest,
  RequestPoolRequest,
  parseRequest,
} from '../../src/api/types.js';
import { TsnetError } from '../../src/errors.js';

const NID = 'a'.repeat(64);
const EID = 'b'.repeat(64);

function message(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof TsnetError && err.code === 'TSNET_ERR_INVALID_REQUEST') return err.message;
    throw err;
  }
  throw new Error('expected parseRequest to throw');
}

t.test('a malformed ID names the field, the rule and the value', async (t) => {
  const m = message(() => parseRequest(NetworkRequest, { NetworkID: 'abc' }, 'DeleteNetwork'));
  t.match(m, /^DeleteNetwork: /, 'prefixed with the method');
  t.match(m, 'NetworkID');
  t.match(m, '64-character lowercase hex');
  t.match(m, '"abc"', 'shows the value');
  const upper = message(() => parseRequest(EndpointRequest, { NetworkID: NID, EndpointID: 'B'.repeat(64) }, 'Leave'));
  t.match(upper, 'EndpointID');
  t.match(upper, 'lowercase hex');
  const num = message(() => parseRequest(NetworkRequest, { NetworkID: 12 }, 'DeleteNetwork'));
  t.match(num, 'NetworkID');
  t.match(num, '12');
});

t.test('a missing field is reported as required', async (t) => {
  const m = message(() => parseRequest(NetworkRequest, {}, 'DeleteNetwork'));
  t.match(m, 'NetworkID is required');
  t.match(m, 'hex', 'and says what it must be');
  const ep = message(() => parseRequest(EndpointRequest, { NetworkID: NID }, 'Join'));
  t.match(ep, 'EndpointID is required');
  const ra = message(() => parseRequest(ReleaseAddressRequest, { PoolID: 'tsnet-local/10.0.0.0/24' }, 'ReleaseAddress'));
  t.match(ra, 'Address is required');
});

t.test('non-object bodies', async (t) => {
  for (const [body, shown] of [
    [null, 'null'],
    [[1, 2], '[1,2]'],
    ['text', '"text"'],
    [42, '42'],
    [true, 'true'],
  ] as const) {
    const m = message(() => parseRequest(NetworkRequest, body, 'CreateNetwork'));
    t.match(m, 'must be a JSON object', `refuses ${JSON.stringify(body)}`);
    t.match(m, shown, 'and shows it');
  }
});

t.test('wrong types name the field and the expectation', async (t) => {
  const opt = message(() => parseRequest(CreateNetworkRequest, { NetworkID: NID, Options: 'x' }, 'CreateNetwork'));
  t.match(opt, 'Options: must be an object or null, got "x"');
  const v6 = message(() => parseRequest(RequestPoolRequest, { V6: 'yes' }, 'RequestPool'));
  t.match(v6, 'V6: must be true or false, got "yes"');
  const pool = message(() => parseRequest(RequestPoolRequest, { Pool: 7 }, 'RequestPool'));
  t.match(pool, 'Pool');
  t.match(pool, '7');
  const space = message(() => parseRequest(RequestPoolRequest, { AddressSpace: 'a b' }, 'RequestPool'));
  t.match(space, 'AddressSpace');
  t.match(space, '"a b"');
  const pid = message(() => parseRequest(RequestAddressRequest, { PoolID: 'x y' }, 'RequestAddress'));
  t.match(pid, 'PoolID');
  t.match(pid, '"x y"');
  const long = message(() => parseRequest(JoinRequest, { NetworkID: NID, EndpointID: EID, SandboxKey: 'k'.repeat(5000) }, 'Join'));
  t.match(long, 'SandboxKey');
  t.ok(long.length < 400, 'a huge value is truncated in the message');
});

t.test('nested fields are named by their path', async (t) => {
  // A bad field inside an object must be named where it is, not as the
  // whole enclosing object: "Interface.Address", "IPv4Data.0.Pool".
  const iface = message(() =>
    parseRequest(CreateEndpointRequest, { NetworkID: NID, EndpointID: EID, Interface: { Address: 5, AddressIPv6: '', MacAddress: '' } }, 'CreateEndpoint'),
  );
  t.match(iface, 'Interface.Address', 'names the nested field');
  t.notMatch(iface, 'Expected union value', 'says what the field must be, not a validator internal');
  const data = message(() => parseRequest(CreateNetworkRequest, { NetworkID: NID, IPv4Data: [{ AddressSpace: 'x' }] }, 'CreateNetwork'));
  t.match(data, 'IPv4Data');
  t.match(data, 'Pool', 'names the missing Pool');
});

t.test('extra fields are tolerated, null maps accepted', async (t) => {
  const body = { NetworkID: NID, Options: null, IPv4Data: null, IPv6Data: [], SomethingNew: { x: 1 } };
  t.same(parseRequest(CreateNetworkRequest, body, 'CreateNetwork'), body);
  t.ok(parseRequest(CreateEndpointRequest, { NetworkID: NID, EndpointID: EID, Interface: null, Options: null }, 'CreateEndpoint'));
  t.ok(parseRequest(RequestPoolRequest, {}, 'RequestPool'), 'every RequestPool field is optional');
  t.ok(parseRequest(RequestAddressRequest, { PoolID: 'tsnet-local/10.0.0.0/24', Address: '', Options: null }, 'RequestAddress'));
  t.ok(
    parseRequest(
      CreateNetworkRequest,
      {
        NetworkID: NID,
        Options: { 'com.docker.network.generic': { a: 'b' } },
        IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: '10.0.0.0/24', Gateway: '10.0.0.1/24', AuxAddresses: { r: '10.0.0.2/24' } }],
        IPv6Data: [],
      },
      'CreateNetwork',
    ),
    'the documented CreateNetwork example validates',
  );
});
