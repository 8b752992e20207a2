// Unit tier, one process for several small modules (each process costs
// a TypeScript start-up): options, types, config.

import t, { type Test } from 'tap';
import { CreateEndpointRequest, CreateNetworkRequest, EndpointRequest, JoinRequest, NetworkRequest, ReleaseAddressRequest, RequestAddressRequest, RequestPoolRequest, parseRequest } from '../../src/api/types.js';
import { DEFAULTS, loadConfig, parseDefaultPools } from '../../src/config.js';
import { OPT, parseBool, parseNetworkOptions } from '../../src/driver/options.js';
import { TsnetError } from '../../src/errors.js';
import { formatPrefix } from '../../src/net/cidr.js';

// src/driver/options.ts: every option is checked before anything touches
// the kernel, and an error names the option and the offending value.
t.test('src/driver/options.ts parseNetworkOptions', async (t) => {
  const G = 'com.docker.network.generic';
  const opts = (generic: Record<string, unknown>, top: Record<string, unknown> = {}) => ({ [G]: generic, ...top });

  /** Expect an INVALID_OPTION error whose message names every given fragment. */
  function refuses(t: Test, options: Record<string, unknown>, ...fragments: string[]): void {
    let err: unknown;
    try {
      parseNetworkOptions(options);
    } catch (e) {
      err = e;
    }
    t.ok(err instanceof TsnetError, `refuses ${JSON.stringify(options)}`);
    if (!(err instanceof TsnetError)) return;
    t.equal(err.code, 'TSNET_ERR_INVALID_OPTION');
    for (const f of fragments) t.match(err.message, f, `message names ${f}`);
  }

  t.test('defaults', async (t) => {
    for (const input of [undefined, null, {}, { [G]: null }, { [G]: {} }]) {
      const c = parseNetworkOptions(input as Record<string, unknown> | null | undefined);
      t.same(
        c,
        {
          mode: 'bridge',
          bridgeName: undefined,
          masquerade: true,
          icc: true,
          hostBindingIpv4: '0.0.0.0',
          gatewayMode: 'nat',
          gatewayModeIpv6: 'nat',
          inhibitIpv4: false,
          mtu: undefined,
          ifacePrefix: 'eth',
          trustedHostInterfaces: [],
          vni: undefined,
          peers: undefined,
          peerKeys: undefined,
          encrypt: false,
          internal: false,
          enableIpv4: true,
          enableIpv6: false,
          generic: {},
        },
        `defaults for ${JSON.stringify(input)}`,
      );
    }
  });

  t.test('Go strconv.ParseBool spellings', async (t) => {
    for (const s of ['1', 't', 'T', 'TRUE', 'true', 'True']) t.equal(parseBool('k', s), true, s);
    for (const s of ['0', 'f', 'F', 'FALSE', 'false', 'False']) t.equal(parseBool('k', s), false, s);
    for (const s of ['yes', 'no', 'on', 'off', 'tRUE', 'FaLsE', '', ' true', '2', 'maybe']) {
      t.throws(() => parseBool('some.key', s), { code: 'TSNET_ERR_INVALID_OPTION' }, `refuses ${JSON.stringify(s)}`);
    }
    t.throws(() => parseBool('some.key', 'maybe'), /some\.key.*"maybe"/, 'error names the key and the value');
  });

  t.test('com.docker.network.bridge.name', async (t) => {
    t.equal(parseNetworkOptions(opts({ [OPT.bridgeName]: 'br-custom' })).bridgeName, 'br-custom');
    t.equal(parseNetworkOptions(opts({ [OPT.bridgeName]: 'a'.repeat(15) })).bridgeName, 'a'.repeat(15));
    refuses(t, opts({ [OPT.bridgeName]: 'a'.repeat(16) }), OPT.bridgeName, 'a'.repeat(16));
    refuses(t, opts({ [OPT.bridgeName]: 'bad name' }), OPT.bridgeName, '"bad name"');
    refuses(t, opts({ [OPT.bridgeName]: 'x;rm' }), OPT.bridgeName, 'x;rm');
    refuses(t, opts({ [OPT.bridgeName]: '' }), OPT.bridgeName);
  });

  t.test('boolean bridge options', async (t) => {
    for (const [key, field, dflt] of [
      [OPT.masquerade, 'masquerade', true],
      [OPT.icc, 'icc', true],
      [OPT.inhibitIpv4, 'inhibitIpv4', false],
    ] as const) {
      t.equal(parseNetworkOptions(opts({}))[field], dflt, `${key} default`);
      t.equal(parseNetworkOptions(opts({ [key]: 'false' }))[field], false, `${key}=false`);
      t.equal(parseNetworkOptions(opts({ [key]: 'F' }))[field], false, `${key}=F`);
      t.equal(parseNetworkOptions(opts({ [key]: '1' }))[field], true, `${key}=1`);
      refuses(t, opts({ [key]: 'maybe' }), key, '"maybe"');
    }
    t.equal(parseNetworkOptions(opts({ [OPT.defaultBridge]: 'false' })).mode, 'bridge', 'default_bridge=false is fine');
    refuses(t, opts({ [OPT.defaultBridge]: 'true' }), OPT.defaultBridge);
    refuses(t, opts({ [OPT.defaultBridge]: 'nope' }), OPT.defaultBridge, '"nope"');
  });

  t.test('host_binding_ipv4', async (t) => {
    t.equal(parseNetworkOptions(opts({ [OPT.hostBindingIpv4]: '127.0.0.1' })).hostBindingIpv4, '127.0.0.1');
    refuses(t, opts({ [OPT.hostBindingIpv4]: '127.0.0' }), OPT.hostBindingIpv4, '"127.0.0"');
    refuses(t, opts({ [OPT.hostBindingIpv4]: 'localhost' }), OPT.hostBindingIpv4, '"localhost"');
  });

  t.test('gateway_mode_ipv4', async (t) => {
    for (const m of ['nat', 'nat-unprotected', 'routed'] as const) t.equal(parseNetworkOptions(opts({ [OPT.gatewayModeIpv4]: m })).gatewayMode, m);
    // The masquerade option is kept as given; routed mode turns NAT off per family in the firewall spec.
    t.equal(parseNetworkOptions(opts({ [OPT.gatewayModeIpv4]: 'routed' })).masquerade, true, 'the masquerade option is kept as given');
    t.equal(parseNetworkOptions(opts({ [OPT.gatewayModeIpv6]: 'routed' })).gatewayModeIpv6, 'routed', 'the IPv6 mode is kept');
    t.equal(parseNetworkOptions(opts({ [OPT.gatewayModeIpv4]: 'isolated' }, { 'com.docker.network.internal': true })).gatewayMode, 'isolated');
    refuses(t, opts({ [OPT.gatewayModeIpv4]: 'isolated' }), OPT.gatewayModeIpv4, 'internal');
    refuses(t, opts({ [OPT.gatewayModeIpv4]: 'bogus' }), OPT.gatewayModeIpv4, '"bogus"');
  });

  t.test('gateway_mode_ipv6 is validated like gateway_mode_ipv4', async (t) => {
    // Docker's bridge driver refuses an unknown gateway_mode_ipv6; tsnet must
    // not silently accept a typo and build a different network.
    refuses(t, opts({ [OPT.gatewayModeIpv6]: 'bogus' }), OPT.gatewayModeIpv6, '"bogus"');
    refuses(t, opts({ [OPT.gatewayModeIpv6]: 'isolated' }), OPT.gatewayModeIpv6, 'internal');
    for (const m of ['nat', 'nat-unprotected', 'routed']) t.doesNotThrow(() => parseNetworkOptions(opts({ [OPT.gatewayModeIpv6]: m })), `accepts ${m}`);
    t.doesNotThrow(() => parseNetworkOptions(opts({ [OPT.gatewayModeIpv6]: 'isolated' }, { 'com.docker.network.internal': true })), 'isolated with --internal');
  });

  t.test('com.docker.network.driver.mtu', async (t) => {
    t.equal(parseNetworkOptions(opts({ [OPT.mtu]: '1400' })).mtu, 1400);
    t.equal(parseNetworkOptions(opts({ [OPT.mtu]: '68' })).mtu, 68);
    t.equal(parseNetworkOptions(opts({ [OPT.mtu]: '65535' })).mtu, 65535);
    t.equal(parseNetworkOptions(opts({ [OPT.mtu]: '0' })).mtu, undefined, '0 means default');
    t.equal(parseNetworkOptions(opts({ [OPT.mtu]: '' })).mtu, undefined, 'empty means default');
    refuses(t, opts({ [OPT.mtu]: '10' }), OPT.mtu, '10');
    refuses(t, opts({ [OPT.mtu]: '65536' }), OPT.mtu, '65536');
    refuses(t, opts({ [OPT.mtu]: '1500.5' }), OPT.mtu, '"1500.5"');
    refuses(t, opts({ [OPT.mtu]: '-1' }), OPT.mtu, '"-1"');
    refuses(t, opts({ [OPT.mtu]: 'big' }), OPT.mtu, '"big"');
    t.equal(parseNetworkOptions(opts({ [OPT.mtu]: 1400 })).mtu, 1400, 'a number from the API is stringified');
  });

  t.test('container_iface_prefix', async (t) => {
    t.equal(parseNetworkOptions(opts({ [OPT.ifacePrefix]: 'net' })).ifacePrefix, 'net');
    refuses(t, opts({ [OPT.ifacePrefix]: '0eth' }), OPT.ifacePrefix, '"0eth"');
    refuses(t, opts({ [OPT.ifacePrefix]: 'e'.repeat(12) }), OPT.ifacePrefix);
    refuses(t, opts({ [OPT.ifacePrefix]: '' }), OPT.ifacePrefix);
  });

  t.test('trusted_host_interfaces', async (t) => {
    t.same(parseNetworkOptions(opts({ [OPT.trustedHostInterfaces]: 'eth0:wg0' })).trustedHostInterfaces, ['eth0', 'wg0']);
    t.same(parseNetworkOptions(opts({ [OPT.trustedHostInterfaces]: '' })).trustedHostInterfaces, []);
    refuses(t, opts({ [OPT.trustedHostInterfaces]: 'eth0:bad name' }), OPT.trustedHostInterfaces, '"bad name"');
  });

  t.test('com.docker.network.internal, enable_ipv4, enable_ipv6', async (t) => {
    t.equal(parseNetworkOptions({ 'com.docker.network.internal': true }).internal, true, 'top-level boolean');
    t.equal(parseNetworkOptions({ 'com.docker.network.internal': 'true' }).internal, true, 'top-level string');
    t.equal(parseNetworkOptions(opts({ 'com.docker.network.internal': 'true' })).internal, true, 'in the generic map');
    t.equal(parseNetworkOptions({ 'com.docker.network.enable_ipv6': true }).enableIpv6, true);
    t.equal(parseNetworkOptions({ 'com.docker.network.enable_ipv4': false }).enableIpv4, false);
    refuses(t, { 'com.docker.network.internal': 'perhaps' }, 'com.docker.network.internal', '"perhaps"');
    refuses(t, { 'com.docker.network.enable_ipv6': 3 }, 'com.docker.network.enable_ipv6', '3');
    refuses(t, opts({ 'com.docker.network.internal': 'perhaps' }), 'com.docker.network.internal', '"perhaps"');
  });

  t.test('tsnet.* keys', async (t) => {
    t.equal(parseNetworkOptions(opts({ 'tsnet.mode': 'bridge' })).mode, 'bridge');
    const ov = parseNetworkOptions(opts({ 'tsnet.mode': 'overlay', 'tsnet.vni': '42', 'tsnet.peers': '192.0.2.1, 192.0.2.2' }));
    t.equal(ov.mode, 'overlay');
    t.equal(ov.vni, 42);
    t.same(ov.peers, ['192.0.2.1', '192.0.2.2']);
    refuses(t, opts({ 'tsnet.mode': 'mesh' }), 'tsnet.mode', '"mesh"');
    refuses(t, opts({ 'tsnet.mode': 'overlay', 'tsnet.vni': '0' }), 'tsnet.vni', '0');
    refuses(t, opts({ 'tsnet.mode': 'overlay', 'tsnet.vni': '16777216' }), 'tsnet.vni', '16777216');
    refuses(t, opts({ 'tsnet.mode': 'overlay', 'tsnet.vni': 'x' }), 'tsnet.vni', '"x"');
    refuses(t, opts({ 'tsnet.mode': 'overlay', 'tsnet.peers': '192.0.2.1,nope' }), 'tsnet.peers', '"nope"');
    refuses(t, opts({ 'tsnet.mode': 'overlay', 'tsnet.peers': ' , ' }), 'tsnet.peers', 'empty');
    refuses(t, opts({ 'tsnet.vni': '42' }), 'tsnet.vni', 'overlay');
    refuses(t, opts({ 'tsnet.peers': '192.0.2.1' }), 'tsnet.peers', 'overlay');
    refuses(t, opts({ 'tsnet.vnii': '42' }), 'unknown tsnet option', '"tsnet.vnii"');
  });

  t.test('unknown keys of other namespaces are kept and ignored', async (t) => {
    const c = parseNetworkOptions(opts({ 'com.example.foo': 'bar', [OPT.icc]: 'false' }));
    t.same(c.generic, { 'com.example.foo': 'bar', [OPT.icc]: 'false' });
  });

  t.test('the generic map must be an object of scalars', async (t) => {
    refuses(t, { [G]: 'x' }, G, '"x"');
    refuses(t, { [G]: ['a'] }, G);
    refuses(t, opts({ 'com.example.foo': { nested: 1 } }), 'com.example.foo', 'nested');
    t.same(parseNetworkOptions(opts({ a: 1, b: true })).generic, { a: '1', b: 'true' }, 'numbers and booleans are stringified');
  });
});

// src/api/types.ts parseRequest: a bad request is refused with a message that
// names the field, says what it must be and shows what was sent.
t.test('src/api/types.ts parseRequest', async (t) => {
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
});

// src/config.ts: defaults, and a bad TSNET_* variable stops start-up with
// an error that names the variable.
t.test('src/config.ts', async (t) => {
  function configError(fn: () => unknown): TsnetError {
    try {
      fn();
    } catch (err) {
      if (err instanceof TsnetError) return err;
      throw err;
    }
    throw new Error('expected a TsnetError');
  }

  t.test('defaults with an empty environment', async (t) => {
    const c = loadConfig({});
    t.equal(c.socket, '/run/docker/plugins/tsnet.sock');
    t.equal(c.stateDir, '/var/lib/tsnet');
    t.equal(c.logLevel, 'info');
    t.equal(c.reconcileInterval, 0);
    t.equal(c.tcpListen, undefined);
    t.same(
      c.defaultPools.map((p) => `${formatPrefix(p.base)}:${p.size}`),
      ['10.210.0.0/16:24', 'fd74:736e:6574::/48:64'],
    );
    t.same(loadConfig({ TSNET_SOCKET: '', TSNET_LOG_LEVEL: '' }).socket, DEFAULTS.socket, 'empty means unset');
  });

  t.test('valid settings are taken', async (t) => {
    const c = loadConfig({
      TSNET_SOCKET: '/tmp/x/tsnet.sock',
      TSNET_STATE_DIR: '/tmp/state',
      TSNET_LOG_LEVEL: 'debug',
      TSNET_DEFAULT_POOLS: '172.80.0.0/16:20',
      TSNET_RECONCILE_INTERVAL: '60',
      TSNET_TCP_LISTEN: '127.0.0.1:9000',
    });
    t.equal(c.socket, '/tmp/x/tsnet.sock');
    t.equal(c.stateDir, '/tmp/state');
    t.equal(c.logLevel, 'debug');
    t.equal(c.reconcileInterval, 60);
    t.equal(c.tcpListen, '127.0.0.1:9000');
    t.same(c.defaultPools.map((p) => [formatPrefix(p.base), p.size]), [['172.80.0.0/16', 20]]);
    t.equal(loadConfig({ TSNET_TCP_LISTEN: '[::1]:9000' }).tcpListen, '[::1]:9000');
  });

  t.test('each invalid variable is named in the error', async (t) => {
    const cases: Array<[Record<string, string>, string, string]> = [
      [{ TSNET_SOCKET: 'relative.sock' }, 'TSNET_SOCKET', 'relative.sock'],
      [{ TSNET_SOCKET: `/${'x'.repeat(120)}` }, 'TSNET_SOCKET', 'under 100'],
      [{ TSNET_STATE_DIR: 'state' }, 'TSNET_STATE_DIR', '"state"'],
      [{ TSNET_LOG_LEVEL: 'verbose' }, 'TSNET_LOG_LEVEL', '"verbose"'],
      [{ TSNET_DEFAULT_POOLS: 'nonsense' }, 'TSNET_DEFAULT_POOLS', '"nonsense"'],
      [{ TSNET_RECONCILE_INTERVAL: '-5' }, 'TSNET_RECONCILE_INTERVAL', '"-5"'],
      [{ TSNET_RECONCILE_INTERVAL: '1m' }, 'TSNET_RECONCILE_INTERVAL', '"1m"'],
      [{ TSNET_TCP_LISTEN: '0.0.0.0:9000' }, 'TSNET_TCP_LISTEN', '"0.0.0.0:9000"'],
      [{ TSNET_TCP_LISTEN: '127.0.0.1' }, 'TSNET_TCP_LISTEN', '"127.0.0.1"'],
    ];
    for (const [env, name, fragment] of cases) {
      const err = configError(() => loadConfig(env));
      t.equal(err.code, 'TSNET_ERR_INVALID_CONFIG', `${name}=${Object.values(env)[0]}`);
      t.match(err.message, new RegExp(`^${name}: `), `message starts with ${name}`);
      t.match(err.message, fragment, `message shows ${fragment}`);
    }
  });

  t.test('parseDefaultPools', async (t) => {
    const pools = parseDefaultPools(' 10.1.0.0/16:24 , fd00::/48:64 ,');
    t.same(pools.map((p) => [formatPrefix(p.base), p.size, p.base.v6]), [
      ['10.1.0.0/16', 24, false],
      ['fd00::/48', 64, true],
    ]);
    t.same(parseDefaultPools('10.0.0.0/24:24').map((p) => p.size), [24], 'SIZE may equal LEN');
    t.same(parseDefaultPools('10.0.0.0/16:30').map((p) => p.size), [30], 'up to /30');
    t.same(parseDefaultPools('fd00::/48:126').map((p) => p.size), [126], 'up to /126');

    const bad: Array<[string, string]> = [
      ['', 'no pools'],
      [' , ', 'no pools'],
      ['10.1.0.0/16', 'BASE/LEN:SIZE'],
      ['10.1.0.5/16:24', 'BASE/LEN:SIZE'], // host bits: not a network address
      ['10.1.0.0/16:8', 'between 16 and 30'],
      ['10.1.0.0/16:31', 'between 16 and 30'],
      ['fd00::/48:127', 'between 48 and 126'],
      ['0.0.0.0/0:24', 'every address'],
      ['10.0.0.0/8:24,10.20.0.0/16:24', 'overlaps 10.0.0.0/8'],
      ['10.1.0.0/16:24,10.1.0.0/16:24', 'overlaps'],
      ['fd00::/48:64,fd00:0:0:8000::/49:64', 'overlaps fd00::/48'],
    ];
    for (const [text, fragment] of bad) {
      const err = configError(() => parseDefaultPools(text));
      t.equal(err.code, 'TSNET_ERR_INVALID_CONFIG', `refuses ${JSON.stringify(text)}`);
      t.match(err.message, /^TSNET_DEFAULT_POOLS: /);
      t.match(err.message, fragment);
    }
    t.same(parseDefaultPools('10.0.0.0/16:24,fd00::/16:64').length, 2, 'v4 and v6 never overlap each other');
    t.match(configError(() => parseDefaultPools('x', 'MY_VAR')).message, /^MY_VAR: /, 'the variable name is a parameter');
  });
});
