// src/log.ts: request child loggers that cost nothing until a line is written.
import t from 'tap';
import { createLogger, lazyChild, type Logger } from '../../src/log.js';

function capture(level: string): { log: Logger; lines: () => Array<Record<string, unknown>>; children: () => number } {
  const out: string[] = [];
  const log = createLogger(level, { write: (s: string) => void out.push(s) });
  let children = 0;
  const child = log.child.bind(log);
  log.child = ((b: Record<string, unknown>) => {
    children++;
    return child(b);
  }) as Logger['child'];
  return { log, lines: () => out.map((l) => JSON.parse(l) as Record<string, unknown>), children: () => children };
}

t.test('a lazy child makes its pino child only when a line is written', async (t) => {
  const c = capture('info');
  const req = lazyChild(c.log, { reqId: 'req-1' });
  req.debug({ address: '10.0.0.2' }, 'below the level');
  t.equal(c.children(), 0, 'nothing made for a call below the level');
  t.same(c.lines(), []);
  t.equal(req.level, 'info');
  t.notOk(req.isLevelEnabled('debug'));
  req.info({ poolId: 'p' }, 'pool allocated');
  req.warn('again');
  t.equal(c.children(), 1, 'one pino child, made once');
  t.match(c.lines(), [
    { level: 'info', reqId: 'req-1', poolId: 'p', msg: 'pool allocated', name: 'tsnet' },
    { level: 'warn', reqId: 'req-1', msg: 'again' },
  ]);
});

t.test('a lazy child of a lazy child carries both bindings once', async (t) => {
  const c = capture('debug');
  const route = lazyChild(lazyChild(c.log, { reqId: 'req-2' }), { method: 'NetworkDriver.Join', networkId: 'n1' });
  route.debug({ ms: 1.5 }, 'handled');
  const [line] = c.lines();
  t.match(line, { reqId: 'req-2', method: 'NetworkDriver.Join', networkId: 'n1', ms: 1.5, msg: 'handled' });
  t.equal(c.children(), 1, 'one child of the real logger, not a chain');
  t.match(route.bindings(), { reqId: 'req-2', method: 'NetworkDriver.Join', networkId: 'n1' });
  const err = new Error('boom');
  route.child({ component: 'x' }).error({ err }, 'failed');
  t.match(c.lines()[1], { component: 'x', reqId: 'req-2', err: { message: 'boom', type: 'Error' }, msg: 'failed' });
});
