// Operator calls on the plugin socket, beside dockerd's (same root-only
// socket, same POST /<Subsystem>.<Method> convention, so nothing new listens):
//   Tsnet.Status       networks, endpoints, published ports, store health
//   Tsnet.Reconcile    reconcile the kernel with the store now
//   Tsnet.AcceptState  resume address allocation after the store was
//                      restored from its previous copy (see store.ts)
//   Tsnet.Doctor       check the host against the store (doctor/), findings
//   Tsnet.Events       follow what tsnet does: JSON lines until the client
//                      hangs up ({"recent": true}: the backlog first)
//   Tsnet.WgPubkey     this host's WireGuard public key (made on first ask),
//                      to exchange for static encrypted peers
//   Tsnet.RotateKey    a new WireGuard key, in use at once and published to
//                      the cluster's encrypted overlays
//   Tsnet.Names        the container names tsnet knows per network, where
//                      its DNS listens, and how it follows dockerd
//   Tsnet.ForgetHost   {} : who holds address blocks and claims in etcd,
//                      alive or not; {"host": ID}: give a dead host's back
// `node dist/cli.js` (tsnetctl) is the client.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { ModeRegistry } from './driver/modes/registry.js';
import type { Store } from './store/store.js';
import type { EventBus } from './events.js';
import type { Finding } from './doctor/checks.js';
import type { OverlayManager } from './overlay/manager.js';
import type { ClusterRegistry } from './cluster/registry.js';
import { TsnetError } from './errors.js';

const HOST_ID = /^[0-9a-f]{16}$/;

/** Why address allocation is paused, if it is. */
export class AllocationHold {
  reason: string | undefined;

  file(stateDir: string): string {
    return path.join(stateDir, 'allocation-hold.txt');
  }
}

export interface AdminDeps {
  store: Store;
  modes: ModeRegistry;
  hold: AllocationHold;
  reconcileNow: () => Promise<unknown>;
  startedAt: Date;
  doctor?: () => Promise<Finding[]>;
  events?: EventBus;
  overlay?: OverlayManager;
  names?: () => Promise<unknown>;
  /** the etcd registry once open; absent: no cluster configured */
  cluster?: () => ClusterRegistry | undefined;
}

export function registerAdminRoutes(app: FastifyInstance, deps: AdminDeps): void {
  app.post('/Tsnet.Status', async () => {
    const s = deps.store.state;
    return {
      startedAt: deps.startedAt.toISOString(),
      stateDir: deps.store.dir,
      generation: deps.store.generation,
      allocationHold: deps.hold.reason ?? null,
      // Bytes, as node reports them: what an operator checks when RSS looks high.
      memory: process.memoryUsage(),
      networks: Object.values(s.networks).map((n) => ({
        id: n.id,
        mode: n.mode,
        bridge: n.bridge,
        subnets: [...n.ipv4, ...n.ipv6].map((x) => x.pool),
        internal: n.internal,
        endpoints: Object.values(s.endpoints).filter((e) => e.networkId === n.id).length,
        // Addresses allocated cluster-wide: the etcd key and the blocks this host leased.
        cluster: n.cluster ? { subnet: n.cluster.subnet, blocks: n.cluster.pools.flatMap((p) => p.blocks.map((b) => b.replace('_', '/'))) } : null,
        ...deps.modes.of(n).status(n),
      })),
      endpoints: Object.values(s.endpoints).map((e) => ({
        id: e.id,
        networkId: e.networkId,
        hostVeth: e.hostVeth,
        address: e.address ?? null,
        ports: e.ports.map((p) => `${p.hostIp}:${p.hostPort}->${p.containerPort}/${p.proto}`),
      })),
      pools: Object.values(s.pools).map((p) => ({ id: p.id, pool: p.pool, subPool: p.subPool ?? null, allocated: Object.keys(p.allocations).length })),
      ...(wg ? { wireguard: await wg.status().catch((err: unknown) => ({ error: (err as Error).message })) } : {}),
    };
  });
  const overlay = deps.overlay;
  const wg = overlay?.wireguard;
  if (overlay && wg) {
    app.post('/Tsnet.WgPubkey', async () => ({ publicKey: (await wg.publicKey()).publicKey, listenPort: wg.port }));
    app.post('/Tsnet.RotateKey', async () => overlay.rotateKey());
  }
  app.post('/Tsnet.Reconcile', async () => {
    await deps.reconcileNow();
    return {};
  });
  const doctor = deps.doctor;
  if (doctor) app.post('/Tsnet.Doctor', async () => ({ findings: await doctor() }));
  const events = deps.events;
  if (events) {
    app.post('/Tsnet.Events', async (request, reply) => {
      const recent = (request.body as { recent?: unknown } | undefined)?.recent === true;
      const stream = events.subscribe({ recent });
      // The client hanging up ends the subscription.
      reply.raw.once('close', () => stream.destroy());
      return reply.type('application/x-ndjson').send(stream);
    });
    // Open streams would hold app.close() until every client left.
    app.addHook('preClose', (done) => {
      events.close();
      done();
    });
  }
  const names = deps.names;
  if (names) app.post('/Tsnet.Names', async () => names());
  const cluster = deps.cluster;
  if (cluster) {
    app.post('/Tsnet.ForgetHost', async (request) => {
      const host = (request.body as { host?: unknown } | undefined)?.host;
      if (host !== undefined && (typeof host !== 'string' || !HOST_ID.test(host))) {
        throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `host: ${JSON.stringify(host)} is not a host id (16 hex digits, as tsnetctl forget-host lists them)`);
      }
      const registry = cluster();
      if (!registry) throw new TsnetError('TSNET_ERR_UNAVAILABLE', 'etcd is not connected yet; retry');
      return host === undefined ? { hosts: await registry.holders() } : { forgotten: await registry.forgetHost(host) };
    });
  }
  app.post('/Tsnet.AcceptState', async () => {
    const was = deps.hold.reason;
    // Writing the state makes the loaded copy the current one again.
    await deps.store.commit();
    await fs.rm(deps.hold.file(deps.store.dir), { force: true });
    deps.hold.reason = undefined;
    return { resumed: was !== undefined };
  });
}
