// NetworkDriver.* routes: each parses its body against the protocol schema,
// binds a child logger to the IDs, and hands off to the driver service.
import type { FastifyInstance } from 'fastify';
import type { NetworkDriverService } from '../driver/driver.js';
import {
  AllocateNetworkRequest,
  CreateEndpointRequest,
  CreateNetworkRequest,
  DiscoveryRequest,
  EndpointRequest,
  GwAllocCheckRequest,
  JoinRequest,
  NetworkRequest,
  ProgramExternalConnectivityRequest,
  parseRequest,
} from './types.js';
import { route } from './route.js';

export function registerNetworkRoutes(app: FastifyInstance, driver: NetworkDriverService): void {
  route(app, 'NetworkDriver.GetCapabilities', async () => driver.capabilities());
  route(app, 'NetworkDriver.GwAllocCheck', async (body) => driver.gwAllocCheck(parseRequest(GwAllocCheckRequest, body, 'GwAllocCheck')));
  route(app, 'NetworkDriver.CreateNetwork', async (body, log) => driver.createNetwork(parseRequest(CreateNetworkRequest, body, 'CreateNetwork'), log));
  route(app, 'NetworkDriver.DeleteNetwork', async (body, log) => driver.deleteNetwork(parseRequest(NetworkRequest, body, 'DeleteNetwork'), log));
  route(app, 'NetworkDriver.CreateEndpoint', async (body, log) => driver.createEndpoint(parseRequest(CreateEndpointRequest, body, 'CreateEndpoint'), log));
  route(app, 'NetworkDriver.EndpointOperInfo', async (body) => driver.endpointOperInfo(parseRequest(EndpointRequest, body, 'EndpointOperInfo')));
  route(app, 'NetworkDriver.DeleteEndpoint', async (body, log) => driver.deleteEndpoint(parseRequest(EndpointRequest, body, 'DeleteEndpoint'), log));
  route(app, 'NetworkDriver.Join', async (body, log) => driver.join(parseRequest(JoinRequest, body, 'Join'), log));
  route(app, 'NetworkDriver.Leave', async (body, log) => driver.leave(parseRequest(EndpointRequest, body, 'Leave'), log));
  route(app, 'NetworkDriver.ProgramExternalConnectivity', async (body, log) =>
    driver.programExternalConnectivity(parseRequest(ProgramExternalConnectivityRequest, body, 'ProgramExternalConnectivity'), log),
  );
  route(app, 'NetworkDriver.RevokeExternalConnectivity', async (body, log) =>
    driver.revokeExternalConnectivity(parseRequest(EndpointRequest, body, 'RevokeExternalConnectivity'), log),
  );
  route(app, 'NetworkDriver.AllocateNetwork', async (body) => driver.allocateNetwork(parseRequest(AllocateNetworkRequest, body, 'AllocateNetwork')));
  route(app, 'NetworkDriver.FreeNetwork', async (body) => (parseRequest(NetworkRequest, body, 'FreeNetwork'), {}));
  route(app, 'NetworkDriver.DiscoverNew', async (body) => (parseRequest(DiscoveryRequest, body, 'DiscoverNew'), {}));
  route(app, 'NetworkDriver.DiscoverDelete', async (body) => (parseRequest(DiscoveryRequest, body, 'DiscoverDelete'), {}));
}
