// Unit tier, one process for several small modules (each process costs
// a TypeScript start-up): names, ip (batch writer), firewall renderers.

import t from 'tap';
import { CHAIN, renderChain } from '../../src/firewall/iptables.js';
import { withLinkRollback } from '../../src/kernel/link.js';
import { type NftNetwork, chainNames, renderBase, renderNetwork, renderNetworkRemoval } from '../../src/firewall/nft.js';
import { CommandError, isExists, isNotFound } from '../../src/kernel/exec.js';
import { batchLine, deleteLink, deleteLinks, getLink, ipBatch, listRoutes } from '../../src/kernel/ip.js';
import { ALIAS_PREFIX, IFNAME_MAX, assertIfName, bridgeName, endpointAlias, endpointMac, hostVethName, isValidIfName, networkAlias, peerVethName, shortId, vxlanName } from '../../src/kernel/names.js';
import { FakeRunner, dockerId } from '../helpers/fake-runner.js';
import { matchGolden } from '../helpers/golden.js';

// src/kernel/names.ts: deterministic, tagged, kernel-safe names.
t.test('src/kernel/names.ts', async (t) => {
  const ids = Array.from({ length: 50 }, () => dockerId());

  t.test('generated names fit IFNAMSIZ and are valid', async (t) => {
    t.equal(IFNAME_MAX, 15);
    for (const id of ids) {
      for (const [kind, name] of [
        ['bridge', bridgeName(id)],
        ['vxlan', vxlanName(id)],
        ['host veth', hostVethName(id)],
        ['peer veth', peerVethName(id)],
      ] as const) {
        if (name.length > 15 || !isValidIfName(name)) t.fail(`${kind} name ${name} for ${id}`);
      }
    }
    const id = ids[0]!;
    t.match(bridgeName(id), /^tsbr-[0-9a-f]{10}$/);
    t.match(vxlanName(id), /^tsvx-[0-9a-f]{10}$/);
    t.equal(hostVethName(id), `tsv${id.slice(0, 11)}`);
    t.equal(peerVethName(id), `tsc${id.slice(0, 11)}`);
    t.not(hostVethName(id), peerVethName(id), 'the two ends differ');
  });

  t.test('names are deterministic and distinct per ID', async (t) => {
    const id = 'a'.repeat(64);
    t.equal(bridgeName(id), bridgeName('a'.repeat(64)), 'same ID, same name (restart-safe)');
    t.equal(bridgeName(id), 'tsbr-ffe054fe7a', 'stable across releases (sha256 of the ID)');
    t.equal(new Set(ids.map(bridgeName)).size, ids.length, 'distinct IDs give distinct bridges');
    t.equal(new Set(ids.map(hostVethName)).size, ids.length);
    t.not(bridgeName(id), vxlanName(id));
  });

  t.test('aliases tag tsnet objects with the full ID', async (t) => {
    const id = ids[1]!;
    t.equal(networkAlias(id), `${ALIAS_PREFIX}net:${id}`);
    t.equal(endpointAlias(id), `${ALIAS_PREFIX}ep:${id}`);
    t.equal(shortId(id), id.slice(0, 12));
  });

  t.test('MACs are locally administered unicast and stable', async (t) => {
    for (const id of ids) {
      const mac = endpointMac(id);
      t.match(mac, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      const first = parseInt(mac.slice(0, 2), 16);
      if ((first & 0x02) === 0) t.fail(`${mac}: not locally administered`);
      if ((first & 0x01) !== 0) t.fail(`${mac}: multicast`);
    }
    t.equal(endpointMac(ids[0]!), endpointMac(ids[0]!), 'deterministic');
    t.equal(new Set(ids.map(endpointMac)).size, ids.length, 'distinct per endpoint');
    t.not(endpointMac('x'), endpointMac('bridge:x'), 'bridge and endpoint MACs come from different inputs');
  });

  t.test('assertIfName', async (t) => {
    for (const good of ['eth0', 'br-custom', 'a', 'a'.repeat(15), 'br_0.100', 'X-Y_z.9']) t.equal(assertIfName(good, 'opt'), good, `accepts ${good}`);
    for (const bad of ['a b', 'x;rm', 'a'.repeat(16), 'brü', 'br\u00a0x', '', '.', '..', 'a/b', 'a"b', "a'b", 'a\nb', 'a#b', 'a:b', 'a$b', 'a\tb']) {
      t.throws(() => assertIfName(bad, 'my.option'), { code: 'TSNET_ERR_INVALID_OPTION' }, `rejects ${JSON.stringify(bad)}`);
    }
    t.throws(() => assertIfName('a b', 'my.option'), /my\.option: invalid interface name "a b"/, 'the error names the option and the value');
    t.notOk(isValidIfName(undefined as unknown as string), 'non-strings are invalid');
  });
});

// src/kernel/ip.ts: the ip -batch writer refuses anything that could be
// read as a second command, and the typed readers and deleters take their
// not-found paths. The kernel is replaced by the FakeRunner.
t.test('src/kernel/ip.ts', async (t) => {
  t.test('batchLine joins safe tokens', async (t) => {
    t.equal(batchLine(['link', 'add', 'name', 'tsbr-1', 'mtu', 1500, 'type', 'bridge']), 'link add name tsbr-1 mtu 1500 type bridge');
    t.equal(batchLine(['addr', 'add', '10.0.0.1/24', 'dev', 'br0']), 'addr add 10.0.0.1/24 dev br0');
    t.equal(batchLine(['addr', 'add', 'fd00::1/64', 'dev', 'br0']), 'addr add fd00::1/64 dev br0');
    t.equal(batchLine(['link', 'set', 'dev', 'x', 'alias', 'tsnet:net:abc']), 'link set dev x alias tsnet:net:abc');
    t.equal(batchLine(['link', 'set', 'dev', 'x', 'address', '02:00:00:00:00:01']), 'link set dev x address 02:00:00:00:00:01');
  });

  t.test('batchLine refuses unsafe tokens', async (t) => {
    for (const bad of ['a b', 'a\nlink del dev eth0', 'a\rb', 'a\tb', '"x"', "'x'", 'x#comment', '#', '', 'a;b', 'a\\b', 'é', 'a$b']) {
      t.throws(() => batchLine(['link', 'set', 'dev', bad, 'up']), { code: 'TSNET_ERR_INTERNAL', message: /unsafe token/ }, `refuses ${JSON.stringify(bad)}`);
    }
  });

  t.test('ipBatch sends one ip -batch process, one line per command', async (t) => {
    const r = new FakeRunner();
    await ipBatch(r, [
      ['link', 'add', 'name', 'a', 'type', 'dummy'],
      ['link', 'set', 'dev', 'a', 'up'],
    ]);
    t.equal(r.calls.length, 1);
    t.same(r.calls[0]!.args, ['-batch', '-']);
    t.equal(r.calls[0]!.input, 'link add name a type dummy\nlink set dev a up\n');
    await ipBatch(r, [['link', 'del', 'dev', 'a']], { force: true });
    t.same(r.calls[1]!.args, ['-force', '-batch', '-']);
    await ipBatch(r, []);
    t.equal(r.calls.length, 2, 'an empty batch runs nothing');
    await t.rejects(ipBatch(r, [['link', 'del', 'dev', 'a b']]), { code: 'TSNET_ERR_INTERNAL' });
    t.equal(r.calls.length, 2, 'an unsafe batch runs nothing at all');
  });

  t.test('getLink: a missing link is undefined, other errors propagate', async (t) => {
    const r = new FakeRunner();
    t.equal(await getLink(r, 'nope0'), undefined);
    t.same([r.calls[0]!.args, r.calls[0]!.input], [['-json', '-details', '-batch', '-'], 'link show dev nope0\n'], 'a batch line, so a warm spare can answer it');
    r.addLink('br0', { linkinfo: { info_kind: 'bridge' } });
    t.equal((await getLink(r, 'br0'))?.linkinfo?.info_kind, 'bridge');
    r.failOn({ cmd: 'ip', input: 'link show', stderr: 'Operation not permitted\n' });
    await t.rejects(getLink(r, 'br0'), { code: 'TSNET_ERR_CMD_FAILED', message: /Operation not permitted/ });
  });

  t.test('deleteLink / deleteLinks: missing counts as success', async (t) => {
    const r = new FakeRunner();
    t.equal(await deleteLink(r, 'ghost'), false);
    r.addLink('real0');
    t.equal(await deleteLink(r, 'real0'), true);
    t.same(r.calls.map((c) => c.line), ['ip link del dev ghost', 'ip link del dev real0']);
    r.failOn({ cmd: 'ip', args: ['del'], stderr: 'RTNETLINK answers: Operation not permitted\n' });
    await t.rejects(deleteLink(r, 'x'), { code: 'TSNET_ERR_CMD_FAILED' });

    const r2 = new FakeRunner();
    r2.failOn({ cmd: 'ip', args: ['-batch'], stderr: 'Cannot find device "b"\n' });
    await deleteLinks(r2, ['a', 'b']);
    t.equal(r2.calls[0]!.input, 'link del dev a\nlink del dev b\n');
    t.same(r2.calls[0]!.args, ['-force', '-batch', '-']);
  });

  t.test("withLinkRollback removes only a device the failed create made", async (t) => {
    const r = new FakeRunner();
    r.addLink('tsvx-user');
    const fail = async (): Promise<void> => {
      throw new Error('create failed');
    };
    await t.rejects(withLinkRollback(r, 'tsvx-user', fail), /create failed/);
    t.notOk(r.calls.some((c) => c.line === 'ip link del dev tsvx-user'), "a device that was there before is someone else's");

    const r2 = new FakeRunner();
    await t.rejects(withLinkRollback(r2, 'tsvx-mine', async () => {
      r2.addLink('tsvx-mine');
      await fail();
    }), /create failed/);
    t.ok(r2.calls.some((c) => c.line === 'ip link del dev tsvx-mine'), 'a half-made device of its own is removed');
  });

  t.test('listRoutes asks every table of one family', async (t) => {
    const r = new FakeRunner();
    r.routes4 = [{ dst: '10.210.0.0/24', dev: 'eth0' }];
    t.same(await listRoutes(r, 4), [{ dst: '10.210.0.0/24', dev: 'eth0' }]);
    t.same(r.calls[0]!.args, ['-json', '-4', 'route', 'show', 'table', 'all']);
    t.same(await listRoutes(r, 6), []);
    t.same(r.calls[1]!.args, ['-json', '-6', 'route', 'show', 'table', 'all']);
  });

  t.test('isExists / isNotFound classify stderr', async (t) => {
    t.ok(isExists(new CommandError('ip', [], 2, 'RTNETLINK answers: File exists')));
    t.notOk(isExists(new CommandError('ip', [], 2, 'Cannot find device "x"')));
    t.ok(isNotFound(new CommandError('ip', [], 1, 'Cannot find device "x"')));
    t.ok(isNotFound(new CommandError('ip', [], 1, 'Device "x" does not exist.')));
    t.notOk(isNotFound(new Error('Cannot find device')), 'only CommandErrors');
    const e = new CommandError('nft', ['-f', '-'], undefined, '');
    t.match(e.message, 'exit code ?', 'no stderr: the exit code is the reason');
  });
});

// src/firewall/nft.ts and src/firewall/iptables.ts render functions, compared
// with golden files in test/golden (UPDATE_GOLDEN=1 rewrites them; review the
// diff). Besides the goldens, each combination is checked for the rules that
// carry its meaning, so a blind golden update cannot hide a semantic change.
t.test('src/firewall render functions', async (t) => {
  const SID = '0123456789ab';

  // Both families share one flag here; per-family behaviour is covered in test/api/network.test.ts.
  function net(flags: Partial<NftNetwork> & { masquerade?: boolean; directAccess?: boolean } = {}): NftNetwork {
    const { masquerade = true, directAccess = false, ...rest } = flags;
    return {
      sid: SID,
      bridge: 'tsbr-0123456789',
      internal: false,
      icc: true,
      masquerade4: masquerade,
      masquerade6: masquerade,
      directAccess4: directAccess,
      directAccess6: directAccess,
      subnets4: ['10.210.0.0/24'],
      subnets6: ['fd74:736e:6574::/64'],
      ...rest,
    };
  }

  const rules = (script: string, chain: string): string[] =>
    script
      .split('\n')
      .filter((l) => l.startsWith(`add rule inet tsnet ${chain} `))
      .map((l) => l.slice(`add rule inet tsnet ${chain} `.length));

  t.test('renderBase', async (t) => {
    const base = renderBase();
    matchGolden(t, 'nft-base.nft', base);
    t.match(base, /^add table inet tsnet\n/);
    t.match(base, 'type filter hook forward priority filter - 1; policy accept;', 'runs before iptables FORWARD');
    t.match(base, 'type nat hook postrouting priority srcnat; policy accept;');
    t.ok(base.includes('flush chain inet tsnet forward'), 'base chains are rewritten, so re-applying is idempotent');
    t.notMatch(base, /flush map|delete map/, 'maps (the networks) survive a re-apply');
    t.equal(renderBase(), base, 'deterministic');
  });

  t.test('renderNetwork: every combination of internal/icc/masquerade/directAccess', async (t) => {
    const c = chainNames(SID);
    for (const internal of [false, true]) {
      for (const icc of [false, true]) {
        for (const masquerade of [false, true]) {
          for (const directAccess of [false, true]) {
            const name = `nft-network-internal${+internal}-icc${+icc}-masq${+masquerade}-direct${+directAccess}.nft`;
            const script = renderNetwork(net({ internal, icc, masquerade, directAccess }));
            matchGolden(t, name, script);
            const out = rules(script, c.out);
            const inn = rules(script, c.in);
            const post = rules(script, c.post);
            const label = name.replace('.nft', '');
            // Chains are created and flushed first, so a re-apply replaces the rules.
            t.ok(script.startsWith(`add chain inet tsnet ${c.out}\nflush chain inet tsnet ${c.out}\n`), `${label}: chains flushed before rules`);
            // Intra-network traffic.
            if (icc) t.same(out.filter((r) => r.startsWith('oifname "tsbr-')), ['oifname "tsbr-0123456789" accept'], `${label}: icc on`);
            else t.equal(out.filter((r) => r.startsWith('oifname "tsbr-')).at(-1), 'oifname "tsbr-0123456789" drop', `${label}: icc off drops container to container`);
            // Leaving and entering.
            if (internal) {
              t.equal(out.at(-1), 'drop', `${label}: internal never leaves`);
              t.same(inn, ['drop'], `${label}: internal never entered`);
              t.same(post.filter((r) => r.includes('saddr')), [], `${label}: internal never masqueraded`);
            } else {
              t.equal(out.at(-1), 'accept', `${label}: may leave`);
              t.ok(out.includes('meta oifkind "bridge" drop'), `${label}: but not into another bridge`);
              t.ok(inn.includes('meta iifkind "bridge" drop'), `${label}: nor be entered from one`);
              t.equal(inn.at(-1), 'drop', `${label}: unsolicited inbound dropped at the end`);
              t.equal(inn.includes('meta nfproto ipv4 accept') && inn.includes('meta nfproto ipv6 accept'), directAccess, `${label}: direct access ${directAccess ? 'accepts' : 'does not accept'} new inbound`);
              const snat = post.filter((r) => r.includes('saddr'));
              t.same(
                snat,
                masquerade
                  ? ['oifname != "tsbr-0123456789" ip saddr 10.210.0.0/24 masquerade', 'oifname != "tsbr-0123456789" ip6 saddr fd74:736e:6574::/64 masquerade']
                  : [],
                `${label}: masquerade`,
              );
            }
            t.ok(
              script.split('\n').some((l) => l.startsWith('add rule ') && l.includes('ct status dnat') && l.endsWith(' masquerade')),
              `${label}: hairpin (DNATed traffic back into the bridge is masqueraded)`,
            );
            for (const map of ['fwd_out', 'fwd_in', 'post_in']) {
              t.ok(script.includes(`add element inet tsnet ${map} { "tsbr-0123456789" : jump n-${SID}-`), `${label}: ${map} element`);
            }
          }
        }
      }
    }
  });

  t.test('renderNetwork for an IPv4-only network with several subnets', async (t) => {
    const script = renderNetwork(net({ subnets4: ['10.1.0.0/24', '10.2.0.0/24'], subnets6: [] }));
    matchGolden(t, 'nft-network-v4only-two-subnets.nft', script);
    t.notMatch(script, 'ip6 saddr');
    t.equal(script.split('oifname != "tsbr-0123456789" ip saddr').length - 1, 2, 'one uplink masquerade per subnet');
  });

  t.test('renderNetworkRemoval succeeds whether or not the objects exist', async (t) => {
    const script = renderNetworkRemoval(SID, 'tsbr-0123456789');
    matchGolden(t, 'nft-network-removal.nft', script);
    const lines = script.trim().split('\n');
    t.equal(lines[0], 'add table inet tsnet');
    // Each delete is preceded by an add of the same object in the same transaction.
    for (const map of ['fwd_out', 'fwd_in', 'post_in']) {
      const add = lines.findIndex((l) => l.startsWith(`add element inet tsnet ${map} { "tsbr-0123456789"`));
      const del = lines.indexOf(`delete element inet tsnet ${map} { "tsbr-0123456789" }`);
      t.ok(add >= 0 && del > add, `${map}: add before delete`);
    }
    for (const ch of Object.values(chainNames(SID))) {
      const add = lines.indexOf(`add chain inet tsnet ${ch}`);
      const del = lines.indexOf(`delete chain inet tsnet ${ch}`);
      t.ok(add >= 0 && del > add, `${ch}: add before delete`);
      t.ok(lines.indexOf(`flush chain inet tsnet ${ch}`) < del, `${ch}: flushed before delete`);
    }
    t.ok(
      lines.findIndex((l) => l.startsWith('delete element')) < lines.findIndex((l) => l.startsWith('delete chain')),
      'map elements (which jump to the chains) go before the chains',
    );
  });

  t.test('renderChain (iptables-restore input)', async (t) => {
    const empty = renderChain([]);
    matchGolden(t, 'iptables-chain-empty.txt', empty);
    t.equal(empty, `*filter\n:${CHAIN} - [0:0]\nCOMMIT\n`, 'no networks: an empty chain');
    const two = renderChain([
      { sid: 'bbbbbbbbbbbb', bridge: 'tsbr-b', v4: true, v6: false },
      { sid: 'aaaaaaaaaaaa', bridge: 'tsbr-a', v4: true, v6: true },
    ]);
    matchGolden(t, 'iptables-chain-two.txt', two);
    const lines = two.split('\n');
    t.equal(lines[1], ':TSNET-FORWARD - [0:0]', 'the chain header flushes just that chain under --noflush');
    t.same(
      lines.filter((l) => l.startsWith('-A')),
      [
        '-A TSNET-FORWARD -i tsbr-a -m comment --comment tsnet:aaaaaaaaaaaa -j ACCEPT',
        '-A TSNET-FORWARD -o tsbr-a -m comment --comment tsnet:aaaaaaaaaaaa -j ACCEPT',
        '-A TSNET-FORWARD -i tsbr-b -m comment --comment tsnet:bbbbbbbbbbbb -j ACCEPT',
        '-A TSNET-FORWARD -o tsbr-b -m comment --comment tsnet:bbbbbbbbbbbb -j ACCEPT',
      ],
      'sorted by bridge, so the output does not depend on insertion order',
    );
    t.equal(lines.at(-2), 'COMMIT');
  });

  t.test('nft renderers refuse unsafe tokens', async (t) => {
    for (const bridge of ['br"0', 'br\n0', 'br 0', "br'0", 'br;0', 'br}0', 'br{0', 'br#0', '']) {
      t.throws(() => renderNetwork(net({ bridge })), { code: 'TSNET_ERR_INTERNAL', message: /unsafe nft token/ }, `renderNetwork bridge ${JSON.stringify(bridge)}`);
      t.throws(() => renderNetworkRemoval(SID, bridge), { code: 'TSNET_ERR_INTERNAL' }, `renderNetworkRemoval bridge ${JSON.stringify(bridge)}`);
    }
    t.throws(() => renderNetwork(net({ sid: 'ab cd' })), { code: 'TSNET_ERR_INTERNAL' }, 'sid');
    t.throws(() => renderNetwork(net({ subnets4: ['10.0.0.0/24; drop'] })), { code: 'TSNET_ERR_INTERNAL' }, 'subnet');
    t.throws(() => renderNetwork(net({ subnets6: ['fd00::/64\nflush ruleset'] })), { code: 'TSNET_ERR_INTERNAL' }, 'ipv6 subnet');
    t.throws(() => chainNames('x\ny'), { code: 'TSNET_ERR_INTERNAL' });
  });

  t.test('renderChain refuses unsafe tokens', async (t) => {
    // A newline in a bridge name would be a second iptables-restore line
    // (e.g. "-F FORWARD"); a space would change the rule's meaning.
    for (const bridge of ['br\n-F FORWARD', 'br 0', 'br"0', '']) {
      t.throws(() => renderChain([{ sid: SID, bridge, v4: true, v6: false }]), `bridge ${JSON.stringify(bridge)}`);
    }
    t.throws(() => renderChain([{ sid: 'x\nCOMMIT', bridge: 'br0', v4: true, v6: false }]), 'sid with a newline');
  });
});
