// The optional TCP listener for Prometheus (TSNET_METRICS_ADDR). It serves
// GET /metrics and nothing else: the plugin protocol has no authentication,
// so it never goes on a TCP port through here.
import http from 'node:http';
import type { Logger } from 'pino';
import { CONTENT_TYPE, type Metrics } from './registry.js';

export async function listenMetrics(addr: { host: string; port: number }, metrics: Metrics, log: Logger): Promise<{ close: () => Promise<void>; port: number }> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' || path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics is served here\n');
      return;
    }
    metrics.expose().then(
      (text) => res.writeHead(200, { 'content-type': CONTENT_TYPE }).end(text),
      (err: unknown) => {
        log.error({ err }, 'metrics scrape failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(addr.port, addr.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as { port: number }).port;
  log.info({ host: addr.host, port }, 'metrics listening on TCP');
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
