// IpamDriver.* routes (protocol.md §4).
import type { FastifyInstance } from 'fastify';
import type { IpamService } from '../ipam/ipam.js';
import { ReleaseAddressRequest, ReleasePoolRequest, RequestAddressRequest, RequestPoolRequest, parseRequest } from './types.js';
import { route } from './route.js';

export function registerIpamRoutes(app: FastifyInstance, ipam: IpamService): void {
  route(app, 'IpamDriver.GetCapabilities', async () => ipam.capabilities());
  route(app, 'IpamDriver.GetDefaultAddressSpaces', async () => ipam.defaultAddressSpaces());
  route(app, 'IpamDriver.RequestPool', async (body, log) => ipam.requestPool(parseRequest(RequestPoolRequest, body, 'RequestPool'), log));
  route(app, 'IpamDriver.ReleasePool', async (body, log) => ipam.releasePool(parseRequest(ReleasePoolRequest, body, 'ReleasePool'), log));
  route(app, 'IpamDriver.RequestAddress', async (body, log) => ipam.requestAddress(parseRequest(RequestAddressRequest, body, 'RequestAddress'), log));
  route(app, 'IpamDriver.ReleaseAddress', async (body, log) => ipam.releaseAddress(parseRequest(ReleaseAddressRequest, body, 'ReleaseAddress'), log));
}
