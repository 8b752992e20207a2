import t from 'tap';
import path from 'node:path';
import { Store } from '../../src/store/store.js';
import { keepAlive, silentLogger, tmpDir } from '../helpers/fake-runner.js';
t.test('x', async (t) => {
  const dir = path.join(await tmpDir(t, 'store'), 'state');
  const a = new Store({ dir, log: silentLogger() });
  let t0 = Date.now();
  await a.open(); console.error('open1', Date.now() - t0); t0 = Date.now();
  const b = new Store({ dir, log: silentLogger() });
  await b.open().catch((e) => console.error('open2 failed', Date.now() - t0, e.message)); t0 = Date.now();
  await keepAlive(() => a.close()); console.error('close1', Date.now() - t0); t0 = Date.now();
  await b.open(); console.error('open3', Date.now() - t0); t0 = Date.now();
  await keepAlive(() => b.close()); console.error('close3', Date.now() - t0);
  t.pass();
});
