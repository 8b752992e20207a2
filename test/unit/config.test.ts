// src/config.ts: defaults, and a bad TSNET_* variable stops start-up with
// an error that names the variable.
import t from 'tap';
import { DEFAULTS, loadConfig, parseDefaultPools } from '../../src/config.js';
import { TsnetError } from '../../src/errors.js';
import { formatPrefix } from '../../src/ipam/cidr.js';

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
