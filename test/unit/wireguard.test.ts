// The WireGuard core without a kernel: keys, tunnel addresses, the `wg`
// configuration text, the guard rules, and what the device code would run
// on a host with the kernel module and on one without (wireguard-go).
import t from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { decodeKey, generateKeyPair, KeyFile, parsePublicKey, publicKeyOf } from '../../src/wireguard/keys.js';
import { parseDump, renderConfig } from '../../src/wireguard/config.js';
import { applyConfig, ensureDevice } from '../../src/wireguard/device.js';
import { WireGuardHost, wireguardOverhead } from '../../src/wireguard/host.js';
import { renderWireGuardGuard } from '../../src/firewall/wireguard-rules.js';
import { TUNNEL_PREFIX, formatEndpoint, tunnelAddress } from '../../src/net/tunnel.js';
import { parsePrefix, parseIp } from '../../src/net/cidr.js';
import { FakeRunner, silentLogger, tmpDir } from '../helpers/fake-runner.js';

const hex = (h: string) => Buffer.from(h, 'hex').toString('base64');

t.test('X25519 public keys match RFC 7748 section 6.1', async (t) => {
  // Alice's and Bob's pairs from the RFC.
  t.equal(publicKeyOf(hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a')), hex('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a'));
  t.equal(publicKeyOf(hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb')), hex('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f'));
});

t.test('generated keys are clamped, distinct, and in wg\'s text form', async (t) => {
  const a = generateKeyPair();
  const b = generateKeyPair();
  t.not(a.privateKey, b.privateKey);
  const raw = decodeKey(a.privateKey)!;
  t.equal(raw.length, 32);
  t.equal(raw[0]! & 7, 0, 'low three bits cleared');
  t.equal(raw[31]! & 0xc0, 0x40, 'top bit cleared, second bit set');
  t.equal(a.publicKey.length, 44);
  t.equal(publicKeyOf(a.privateKey), a.publicKey);
  t.equal(parsePublicKey(a.publicKey, 'tsnet.peers'), a.publicKey);
  t.throws(() => parsePublicKey('abc', 'tsnet.peers'), /tsnet\.peers: "abc" is not a WireGuard public key/);
  t.throws(() => parsePublicKey(`${a.publicKey.slice(0, 42)}B=`, 'tsnet.peers'), /not a WireGuard public key/, 'stray bits in the last character');
  t.equal(decodeKey(`${a.publicKey}\n`), undefined, 'no trailing junk');
});

t.test('the key file: made once, 0600, kept across loads, replaced by rotate', async (t) => {
  const dir = await tmpDir(t, 'wg-keys');
  const kf = new KeyFile(dir);
  const first = await kf.load();
  const st = await fs.stat(kf.file);
  t.equal(st.mode & 0o777, 0o600);
  t.same(await new KeyFile(dir).load(), first, 'a second process reads the same key');
  const next = await kf.rotate();
  t.not(next.publicKey, first.publicKey);
  t.same(await new KeyFile(dir).load(), next, 'the rotated key is what a restart reads');
  t.equal((await fs.readdir(dir)).sort().join(','), 'wireguard.key', 'no temporary file left');
  await fs.writeFile(path.join(dir, 'wireguard.key'), 'garbage\n');
  await t.rejects(new KeyFile(dir).load(), /does not hold a WireGuard private key/);
  await fs.chmod(kf.file, 0o644);
  await fs.writeFile(kf.file, `${first.privateKey}\n`);
  await new KeyFile(dir).load();
  t.equal((await fs.stat(kf.file)).mode & 0o777, 0o600, 'a key found readable by others is made 0600');
});

t.test('tunnel addresses derive from the underlay address alone', async (t) => {
  t.equal(tunnelAddress('10.99.0.11'), 'fd74:7377:6700::a63:b');
  t.equal(tunnelAddress('192.168.1.2'), 'fd74:7377:6700::c0a8:102');
  const v6 = tunnelAddress('fd00:99::11');
  t.equal(v6, tunnelAddress('fd00:0099:0:0::11'), 'spelling does not matter');
  t.not(v6, tunnelAddress('fd00:99::12'));
  const prefix = parsePrefix(TUNNEL_PREFIX)!;
  for (const a of [tunnelAddress('10.0.0.1'), v6]) {
    const v = parseIp(a)!.value;
    t.equal(v >> 64n, prefix.base >> 64n, `${a} is in ${TUNNEL_PREFIX}`);
  }
  t.ok((parseIp(v6)!.value >> 63n) & 1n, 'IPv6-derived ones have the top host bit set, IPv4 ones never');
  t.equal(formatEndpoint('10.0.0.1', 51820), '10.0.0.1:51820');
  t.equal(formatEndpoint('fd00::1', 51820), '[fd00::1]:51820');
  t.equal(wireguardOverhead('10.0.0.1'), 60);
  t.equal(wireguardOverhead('fd00::1'), 80);
});

const A = generateKeyPair();
const B = generateKeyPair();
const C = generateKeyPair();

t.test('the wg configuration text', async (t) => {
  const text = renderConfig({
    privateKey: A.privateKey,
    listenPort: 51820,
    peers: [{ publicKey: B.publicKey, endpoint: '10.99.0.12:51820', allowedIps: ['fd74:7377:6700::a63:c/128'] }],
  });
  t.equal(text, `[Interface]\nPrivateKey = ${A.privateKey}\nListenPort = 51820\n\n[Peer]\nPublicKey = ${B.publicKey}\nEndpoint = 10.99.0.12:51820\nAllowedIPs = fd74:7377:6700::a63:c/128\nPersistentKeepalive = 25\n`);
  const two = (order: 1 | -1) => renderConfig({ privateKey: A.privateKey, listenPort: 1, peers: [{ publicKey: B.publicKey, endpoint: '[fd00::2]:1', allowedIps: ['fd74::2/128'] }, { publicKey: C.publicKey, endpoint: '10.0.0.3:1', allowedIps: ['fd74::3/128'] }].sort(() => order) });
  t.equal(two(1), two(-1), 'peer order does not change the text');
  t.throws(() => renderConfig({ privateKey: A.privateKey, listenPort: 1, peers: [{ publicKey: B.publicKey, endpoint: '10.0.0.1:1\nPostUp = x', allowedIps: [] }] }), /refusing/);
  t.throws(() => renderConfig({ privateKey: A.privateKey, listenPort: 1, peers: [{ publicKey: 'x', endpoint: '10.0.0.1:1', allowedIps: [] }] }), /refusing/);
  t.throws(() => renderConfig({ privateKey: A.privateKey, listenPort: 0, peers: [] }), /listen port/);
});

t.test('wg show dump: parsed, private key dropped', async (t) => {
  const dump = `${A.privateKey}\t${A.publicKey}\t51820\toff\n${B.publicKey}\t(none)\t10.99.0.12:51820\tfd74:7377:6700::a63:c/128\t1700000000\t1000\t2000\toff\n${C.publicKey}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n`;
  const s = parseDump(dump);
  t.same(s, {
    publicKey: A.publicKey,
    listenPort: 51820,
    peers: [
      { publicKey: B.publicKey, endpoint: '10.99.0.12:51820', allowedIps: ['fd74:7377:6700::a63:c/128'], latestHandshake: 1700000000, rx: 1000, tx: 2000 },
      { publicKey: C.publicKey, endpoint: undefined, allowedIps: [], latestHandshake: 0, rx: 0, tx: 0 },
    ],
  });
  t.notMatch(JSON.stringify(s), A.privateKey);
});

t.test('the guard: peers only on the WireGuard port, no clear-text leak, no injection around the tunnel', async (t) => {
  const text = renderWireGuardGuard({ iface: 'tswg0', port: 51820, vxlanPort: 4789, prefix: TUNNEL_PREFIX, peers: ['10.99.0.12', 'fd00:99::13', '10.99.0.12'], vnis: [4100, 9000] });
  t.match(text, 'add rule inet tsnet wg_in udp dport 51820 ip saddr != @wgpeer4 counter drop');
  t.match(text, 'add rule inet tsnet wg_in udp dport 51820 ip6 saddr != @wgpeer6 counter drop');
  t.match(text, 'add rule inet tsnet wg_in iifname != "tswg0" udp dport 4789 @th,96,24 { 4100, 9000 } counter drop');
  t.match(text, `add rule inet tsnet wg_in iifname != "tswg0" ip6 saddr ${TUNNEL_PREFIX} counter drop`);
  t.match(text, `add rule inet tsnet wg_out ip6 daddr ${TUNNEL_PREFIX} oifname != "tswg0" counter drop`);
  t.match(text, 'add element inet tsnet wgpeer4 { 10.99.0.12 }');
  t.match(text, 'add element inet tsnet wgpeer6 { fd00:99::13 }');
  t.throws(() => renderWireGuardGuard({ iface: 'tswg0"; flush ruleset', port: 1, vxlanPort: 1, prefix: TUNNEL_PREFIX, peers: [], vnis: [] }), /unsafe interface name/);
  t.throws(() => renderWireGuardGuard({ iface: 'tswg0', port: 1, vxlanPort: 1, prefix: TUNNEL_PREFIX, peers: ['1.2.3.4; drop'], vnis: [] }), /not an IP address/);
});

const SPEC = { name: 'tswg0', mtu: 1440, alias: 'tsnet:wg', address: 'fd74:7377:6700::a63:b/64' };

t.test('kernel module and wireguard-go: different devices, the same wg configuration', async (t) => {
  const config = { privateKey: A.privateKey, listenPort: 51820, peers: [{ publicKey: B.publicKey, endpoint: '10.99.0.12:51820', allowedIps: ['fd74:7377:6700::a63:c/128'] }] };
  const dir = await tmpDir(t, 'wg-paths');
  const kernel = new FakeRunner();
  t.same(await ensureDevice(kernel, SPEC), { implementation: 'kernel', created: true });
  await applyConfig(kernel, 'tswg0', config, dir);
  const user = new FakeRunner().failOn({ cmd: 'ip', args: ['wireguard'], stderr: 'Error: Unknown device type.\n' });
  t.same(await ensureDevice(user, SPEC), { implementation: 'wireguard-go', created: true });
  await applyConfig(user, 'tswg0', config, dir);
  t.ok(kernel.calls.some((c) => c.line === 'ip link add name tswg0 type wireguard'), 'the kernel path makes a wireguard link');
  t.equal(kernel.callsOf('wireguard-go').length, 0, 'and starts no daemon');
  t.same(user.callsOf('wireguard-go').map((c) => c.args), [['tswg0']], 'the other path starts wireguard-go for the same name');
  const wg = (r: FakeRunner) => r.callsOf('wg', (c) => c.args[0] === 'syncconf').map((c) => ({ args: c.args, input: c.input }));
  const waited = user.calls.findIndex((c) => c.line === 'wg show tswg0 listen-port');
  const mtuSet = user.calls.findIndex((c) => (c.input ?? '').includes('mtu 1440'));
  t.ok(waited > 0 && waited < mtuSet, "wireguard-go's daemon answers before the MTU is set (it resets the MTU when it starts)");
  t.same(wg(kernel), wg(user), 'both paths are configured by the same wg command and text');
  t.same(wg(kernel), [{ args: ['syncconf', 'tswg0', path.join(dir, 'tswg0.conf')], input: renderConfig(config) }]);
  t.same(await fs.readdir(dir), [], 'the file holding the private key is gone after');
  t.equal(kernel.batchInput(), user.batchInput(), 'and get the same MTU, tag, address and link state');
  t.match(kernel.batchInput(), /link set dev tswg0 alias tsnet:wg mtu 1440 addrgenmode none/);
  t.match(kernel.batchInput(), /addr replace fd74:7377:6700::a63:b\/64 dev tswg0 nodad/);
});

t.test('an existing device is taken over; a TUN device whose daemon is gone is made again', async (t) => {
  const r = new FakeRunner();
  r.addLink('tswg0', { linkinfo: { info_kind: 'tun' } });
  t.same(await ensureDevice(r, SPEC), { implementation: 'wireguard-go', created: false }, 'wireguard-go answering: reused');
  t.equal(r.callsOf('wireguard-go').length, 0);
  const dead = new FakeRunner().failOn({ cmd: 'wg', args: ['listen-port'], stderr: 'Unable to access interface: No such file or directory\n', times: 1 }).failOn({ cmd: 'ip', args: ['wireguard'], stderr: 'Error: Unknown device type.\n' });
  dead.addLink('tswg0', { linkinfo: { info_kind: 'tun' } });
  t.same(await ensureDevice(dead, SPEC), { implementation: 'wireguard-go', created: true });
  t.ok(dead.calls.some((c) => c.line === 'ip link del dev tswg0'), 'the dead one deleted first');
  const other = new FakeRunner();
  other.addLink('tswg0', { linkinfo: { info_kind: 'bridge' } });
  await t.rejects(ensureDevice(other, SPEC), /tswg0 exists and is a bridge device/);
  const broken = new FakeRunner().failOn({ cmd: 'ip', args: ['wireguard'], stderr: 'Error: Unknown device type.\n' }).failOn({ cmd: 'wireguard-go', stderr: 'ERROR: Failed to create TUN device\n' });
  await t.rejects(ensureDevice(broken, SPEC), /no WireGuard module and wireguard-go could not make tswg0/);
  const halfway = new FakeRunner().failOn({ cmd: 'ip', input: 'addr replace', stderr: 'RTNETLINK answers: Permission denied\n' });
  await t.rejects(ensureDevice(halfway, SPEC));
  t.notOk(halfway.links.has('tswg0'), 'a device made by a failed call is removed again');
});

t.test('the host: peers from every network, newest key wins, kept while a source is unknown, gone with the last network', async (t) => {
  const dir = await tmpDir(t, 'wg-host');
  const r = new FakeRunner();
  const host = new WireGuardHost({ runner: r, log: silentLogger(), stateDir: dir, port: 51820, vxlanPort: 4789 });
  const u = { local: '10.99.0.11', mtu: 1500 };
  t.equal(host.tunnelMtu(u), 1440);
  t.equal(host.networkMtu(u), 1370);
  await host.attach('net1', 4100, u, [{ underlay: '10.99.0.12', publicKey: B.publicKey, port: 51820 }, { underlay: '10.99.0.11', publicKey: 'ignored-self', port: 51820 }]);
  const last = () => r.callsOf('wg').at(-1)!.input!;
  t.match(last(), `PublicKey = ${B.publicKey}\nEndpoint = 10.99.0.12:51820\nAllowedIPs = fd74:7377:6700::a63:c/128`);
  t.notMatch(last(), 'ignored-self', 'this host is never its own peer');
  t.match(r.nftScripts().at(-1)!.input!, 'add element inet tsnet wgpeer4 { 10.99.0.12 }');
  // Another network, the same host 2 under a newer key (a rotation seen here first).
  await host.attach('net2', 4200, u, [{ underlay: '10.99.0.12', publicKey: C.publicKey, port: 51820, since: 2 }, { underlay: '10.99.0.13', publicKey: A.publicKey, port: 51820 }]);
  t.match(last(), C.publicKey);
  t.notMatch(last(), B.publicKey, 'one peer per host: the newer key');
  t.match(last(), 'Endpoint = 10.99.0.13:51820');
  t.match(r.nftScripts().at(-1)!.input!, '@th,96,24 { 4100, 4200 }');
  // A third network whose peers are not known yet: nothing already configured is dropped.
  await host.attach('net3', 4300, u, undefined);
  const dumpCalls = r.callsOf('wg', (c) => c.args.includes('dump'));
  t.equal(dumpCalls.length, 1, 'the device is read to keep its peers while a source is unknown');
  const down1 = await host.detach('net2');
  t.same(down1, { down: false });
  await host.detach('net3');
  t.notMatch(last(), C.publicKey, 'peers only net2 named are gone with it');
  r.clearCalls();
  t.same(await host.detach('net1'), { down: true });
  t.ok(r.calls.some((c) => c.line === 'ip link del dev tswg0'), 'the interface goes with the last encrypted network');
  t.notOk(host.active);
});

t.test('rotation: a new key in use at once and in the key file', async (t) => {
  const dir = await tmpDir(t, 'wg-rotate');
  const r = new FakeRunner();
  const host = new WireGuardHost({ runner: r, log: silentLogger(), stateDir: dir, port: 51820, vxlanPort: 4789 });
  await host.attach('net1', 4100, { local: '10.99.0.11', mtu: 1500 }, []);
  const before = (await host.publicKey()).publicKey;
  const rotated = await host.rotate();
  t.equal(rotated.previous, before);
  t.not(rotated.publicKey, before);
  const key = (await fs.readFile(path.join(dir, 'wireguard.key'), 'utf8')).trim();
  t.equal(publicKeyOf(key), rotated.publicKey);
  t.match(r.callsOf('wg').at(-1)!.input!, `PrivateKey = ${key}`, 'the device got the new key');
});

t.test('tsnet.encrypt and keyed tsnet.peers: parsed, and refused with the option and the value', async (t) => {
  const { parseNetworkOptions } = await import('../../src/driver/options.js');
  const { loadConfig } = await import('../../src/config.js');
  const g = (o: Record<string, string>) => ({ 'com.docker.network.generic': o });
  const c = parseNetworkOptions(g({ 'tsnet.mode': 'overlay', 'tsnet.encrypt': 'true', 'tsnet.peers': `10.0.0.1=${A.publicKey}, 10.0.0.2=${B.publicKey}` }));
  t.equal(c.encrypt, true);
  t.same(c.peers, ['10.0.0.1', '10.0.0.2']);
  t.same(c.peerKeys, { '10.0.0.1': A.publicKey, '10.0.0.2': B.publicKey });
  t.same(parseNetworkOptions(g({ 'tsnet.mode': 'overlay', 'tsnet.peers': '10.0.0.1,10.0.0.2' })).peerKeys, undefined, 'plain peers as before');
  t.throws(() => parseNetworkOptions(g({ 'tsnet.encrypt': 'true' })), /tsnet\.encrypt only applies with tsnet\.mode=overlay/);
  t.throws(() => parseNetworkOptions(g({ 'tsnet.mode': 'macvlan', 'tsnet.encrypt': 'true' })), /tsnet\.encrypt only applies with tsnet\.mode=overlay/);
  t.throws(() => parseNetworkOptions(g({ 'tsnet.mode': 'overlay', 'tsnet.encrypt': 'yes' })), /tsnet\.encrypt: invalid boolean "yes"/);
  t.throws(() => parseNetworkOptions(g({ 'tsnet.mode': 'overlay', 'tsnet.encrypt': 'true', 'tsnet.peers': '10.0.0.1=notakey' })), /tsnet\.peers \(10\.0\.0\.1\): "notakey" is not a WireGuard public key/);
  t.throws(() => parseNetworkOptions(g({ 'tsnet.mode': 'overlay', 'tsnet.peers': `10.0.0.1=${A.publicKey}` })), /names a WireGuard key, which only an encrypted overlay uses \(tsnet\.encrypt=true\)/);
  t.throws(() => parseNetworkOptions(g({ 'tsnet.mode': 'overlay', 'tsnet.encrypt': 'true', 'tsnet.peers': `nonsense=${A.publicKey}` })), /tsnet\.peers: "nonsense" is not an IP address/);
  t.equal(loadConfig({}).wgPort, 51820);
  t.equal(loadConfig({}).wgMtu, undefined);
  t.equal(loadConfig({ TSNET_WG_PORT: '51999', TSNET_WG_MTU: '9000' }).wgMtu, 9000);
  t.throws(() => loadConfig({ TSNET_WG_PORT: '70000' }), /TSNET_WG_PORT: "70000" is not a UDP port/);
  t.throws(() => loadConfig({ TSNET_WG_PORT: '4789' }), /TSNET_WG_PORT: 4789 is TSNET_VXLAN_PORT too/);
  t.throws(() => loadConfig({ TSNET_WG_MTU: '500' }), /TSNET_WG_MTU: "500" must be an MTU between 1280 and 65535/);
});
