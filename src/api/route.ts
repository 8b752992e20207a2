// One way to declare a plugin route: POST /<Method>, a child logger bound to
// the request's IDs, a timing line at debug, and errors left to the single
// error handler in app.ts.
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { lazyChild, requestBindings } from '../log.js';

export type Handler = (body: unknown, log: Logger) => Promise<unknown>;

export function route(app: FastifyInstance, method: string, handler: Handler): void {
  app.post(`/${method}`, async (request) => {
    const log = lazyChild(request.log as unknown as Logger, { method, ...requestBindings(request.body) });
    const started = performance.now();
    // Only an absent body (Content-Length: 0) means {}; a JSON null is malformed.
    const result = await handler(request.body === undefined ? {} : request.body, log);
    log.debug({ ms: +(performance.now() - started).toFixed(2) }, 'handled');
    return result ?? {};
  });
}
