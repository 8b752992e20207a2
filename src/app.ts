// The Fastify app, without a socket: main.ts listens, tests inject().
// Protocol traps handled here once (protocol.md §1.2, §1.5):
// - dockerd sends no Content-Type, so one catch-all parser takes every body
//   as text; empty means {}; JSON is parsed with prototype-poisoning checks.
// - success is HTTP 200 with a JSON object, never an empty body;
// - every failure is HTTP 500 {"Err": "..."}, which both the network and the
//   IPAM side of dockerd read on a non-200 reply;
// - unknown methods get 404, which dockerd treats as "not implemented".
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { TsnetError, toDockerError } from './errors.js';
import { registerIpamRoutes } from './api/ipam-routes.js';
import { registerNetworkRoutes } from './api/network-routes.js';
import type { NetworkDriverService } from './driver/driver.js';
import type { IpamService } from './ipam/ipam.js';
import { lazyChild } from './log.js';
import { CONTENT_TYPE, type Metrics } from './metrics/registry.js';

/** One answered POST: the route's method name, what dockerd sent, and how it went. */
export interface Answer {
  method: string;
  body: unknown;
  status: number;
  /** "ok", or the error code the error handler mapped the failure to */
  outcome: string;
  seconds: number;
}

export interface AppDeps {
  driver: NetworkDriverService;
  ipam: IpamService;
  log: Logger;
  /** extra read-only admin routes (state summary), registered under /tsnet/ */
  admin?: (app: FastifyInstance) => void;
  /** served at GET /metrics */
  metrics?: Metrics;
  /** told of every answered POST (request metrics, the event stream); must not throw */
  onAnswer?: (a: Answer) => void;
}

declare module 'fastify' {
  interface FastifyRequest {
    tsnetStart: number;
    tsnetCode: string | null;
  }
}

export const BODY_LIMIT = 1024 * 1024;

export function buildApp(deps: AppDeps): FastifyInstance {
  const app = Fastify({
    loggerInstance: deps.log as unknown as FastifyBaseLogger,
    // Routes log their own line with the network and endpoint IDs (api/route.ts).
    logController: new LogController({ disableRequestLogging: true }),
    // The request id is bound only when a line is written (src/log.ts).
    childLoggerFactory: (logger, bindings) => lazyChild(logger as unknown as Logger, bindings) as unknown as FastifyBaseLogger,
    bodyLimit: BODY_LIMIT,
    return503OnClosing: false,
    // dockerd keeps connections open; do not hang shutdown on idle ones.
    forceCloseConnections: 'idle',
  });

  if (deps.onAnswer) {
    const onAnswer = deps.onAnswer;
    app.decorateRequest('tsnetStart', 0);
    app.decorateRequest('tsnetCode', null);
    app.addHook('onRequest', (request, _reply, done) => {
      request.tsnetStart = performance.now();
      done();
    });
    // Keyed by the route, never the raw URL: a 404 for a made-up path adds no series.
    app.addHook('onResponse', (request, reply, done) => {
      const url = request.routeOptions.url;
      if (request.method === 'POST') {
        const status = reply.statusCode;
        onAnswer({
          method: url ? url.slice(1) : 'unknown',
          body: request.body,
          status,
          outcome: status === 200 ? 'ok' : (request.tsnetCode ?? `HTTP_${status}`),
          seconds: (performance.now() - request.tsnetStart) / 1000,
        });
      }
      done();
    });
  }

  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') {
      done(null, {});
      return;
    }
    parseJson(req, text, (err, value) => {
      if (err) done(new TsnetError('TSNET_ERR_INVALID_REQUEST', `request body is not valid JSON: ${err.message}`), undefined);
      else done(null, value);
    });
  });

  app.setErrorHandler((err: Error, request, reply) => {
    let mapped: Error = err;
    const code = (err as { code?: string }).code;
    if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      mapped = new TsnetError('TSNET_ERR_INVALID_REQUEST', `request body is larger than ${BODY_LIMIT} bytes`);
    } else if (typeof code === 'string' && code.startsWith('FST_ERR')) {
      mapped = new TsnetError('TSNET_ERR_INVALID_REQUEST', err.message);
    }
    const { status, body } = toDockerError(mapped);
    const level = mapped instanceof TsnetError && mapped.code !== 'TSNET_ERR_INTERNAL' && mapped.code !== 'TSNET_ERR_CMD_FAILED' && mapped.code !== 'TSNET_ERR_STORE' ? 'warn' : 'error';
    request.log[level]({ err: mapped, url: request.url, code: (mapped as TsnetError).code }, 'request failed');
    request.tsnetCode = mapped instanceof TsnetError ? mapped.code : 'TSNET_ERR_INTERNAL';
    void reply.code(status).send(body);
  });

  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ Err: `tsnet does not implement ${request.method} ${request.url.slice(0, 100)}` });
  });

  app.post('/Plugin.Activate', async () => ({ Implements: ['NetworkDriver', 'IpamDriver'] }));
  registerNetworkRoutes(app, deps.driver);
  registerIpamRoutes(app, deps.ipam);
  deps.admin?.(app);
  const metrics = deps.metrics;
  if (metrics) {
    // GET, unlike the plugin protocol: what curl --unix-socket and Prometheus send.
    app.get('/metrics', async (_request, reply) => reply.type(CONTENT_TYPE).send(await metrics.expose()));
  }
  return app;
}
