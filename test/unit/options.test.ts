// src/driver/options.ts: every option is checked before anything touches
// the kernel, and an error names the option and the offending value.
import t, { type Test } from 'tap';
import { OPT, parseBool, parseNetworkOptions } from '../../src/driver/options.js';
import { TsnetError } from '../../src/errors.js';

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
        inhibitIpv4: false,
        mtu: undefined,
        ifacePrefix: 'eth',
        trustedHostInterfaces: [],
        vni: undefined,
        peers: undefined,
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
  t.equal(parseNetworkOptions(opts({ [OPT.gatewayModeIpv4]: 'routed' })).masquerade, false, 'routed means no masquerade');
  t.equal(parseNetworkOptions(opts({ [OPT.gatewayModeIpv4]: 'isolated' }, { 'com.docker.network.internal': true })).gatewayMode, 'isolated');
  refuses(t, opts({ [OPT.gatewayModeIpv4]: 'isolated' }), OPT.gatewayModeIpv4, 'internal');
  refuses(t, opts({ [OPT.gatewayModeIpv4]: 'bogus' }), OPT.gatewayModeIpv4, '"bogus"');
});

t.test('gateway_mode_ipv6 is validated like gateway_mode_ipv4', async (t) => {
  // Docker's bridge driver refuses an unknown gateway_mode_ipv6; tsnet must
  // not silently accept a typo and build a different network.
  refuses(t, opts({ [OPT.gatewayModeIpv6]: 'bogus' }), OPT.gatewayModeIpv6, '"bogus"');
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
