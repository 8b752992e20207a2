// Entry point: configuration, the store (locked), the services, the socket.
// The socket listens before reconcile runs, so dockerd (which gives a
// managed plugin ~9 s) never waits on a large store; kernel-touching calls
// wait for reconcile, IPAM calls do not need to.
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { AllocationHold, registerAdminRoutes } from './admin.js';
import { buildApp } from './app.js';
import { loadConfig, type Config } from './config.js';
import { reconcile } from './driver/reconcile.js';
import { TsnetError } from './errors.js';
import { createRunner } from './kernel/exec.js';
import { createLogger } from './log.js';
import { Store } from './store/store.js';
import { buildServices } from './services.js';
import type { ClusterRegistry, MemberAddrs } from './cluster/registry.js';
import { lanAddresses } from './routed/lan.js';
import { findUnderlay, type OverlayManager } from './overlay/manager.js';
import { randomBytes } from 'node:crypto';
import { Metrics } from './metrics/registry.js';
import { listenMetrics } from './metrics/server.js';
import { EventBus, reconcileFixes } from './events.js';
import { observeAnswers } from './observe.js';
import { runDoctor } from './doctor/doctor.js';
import { judgeNetnsDir } from './doctor/checks.js';
import { prepareNetnsDir, readNetnsDir } from './kernel/netns-dir.js';
import type { NamesService } from './dns/service.js';

/** Remove a stale socket file; refuse to take over one a live process still serves. */
export async function prepareSocket(socketPath: string, log: Logger): Promise<void> {
  await fs.mkdir(path.dirname(socketPath), { recursive: true, mode: 0o750 });
  let stat;
  try {
    stat = await fs.lstat(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!stat.isSocket()) throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_SOCKET ${socketPath} exists and is not a socket; not touching it`);
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect({ path: socketPath });
    const done = (v: boolean): void => {
      c.destroy();
      resolve(v);
    };
    c.once('connect', () => done(true));
    c.once('error', () => done(false));
    setTimeout(() => done(false), 1000).unref();
  });
  if (live) throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `another process is serving ${socketPath}; not stealing it`);
  await fs.unlink(socketPath);
  log.info({ socket: socketPath }, 'removed stale socket');
}

/**
 * The cluster registry, when etcd endpoints are configured. The host ID is
 * made once and kept in the state directory, so a restarted tsnet takes its
 * own etcd keys over rather than appearing as a new host.
 */
async function clusterIdentity(config: Config, store: Store, runner: ReturnType<typeof createRunner>): Promise<{ hostId: string; vtep: string; addrs: MemberAddrs }> {
  const idFile = path.join(store.dir, 'host-id');
  let hostId = (await fs.readFile(idFile, 'utf8').catch(() => '')).trim();
  if (!/^[0-9a-f]{16}$/.test(hostId)) {
    hostId = randomBytes(8).toString('hex');
    await fs.writeFile(idFile, `${hostId}\n`, { mode: 0o600 });
  }
  return { hostId, ...(await hostAddresses(config, runner)) };
}

/** This host's VTEP (TSNET_ADVERTISE_ADDR, else the default route's source) and its LAN address of each family. */
async function hostAddresses(config: Config, runner: ReturnType<typeof createRunner>): Promise<{ vtep: string; addrs: MemberAddrs }> {
  const underlay = await findUnderlay(runner, config.advertiseAddr);
  return { vtep: underlay.local, addrs: await lanAddresses(runner, underlay) };
}

/**
 * etcd3 (gRPC, protobuf) takes ~250 ms to load, and a managed plugin must
 * listen within dockerd's first 500 ms: it is loaded after the socket
 * listens, inside the start-up reconcile that requests wait for.
 */
async function openRegistry(config: Config, id: { hostId: string; vtep: string; addrs: MemberAddrs }, log: Logger): Promise<ClusterRegistry> {
  const { ClusterRegistry } = await import('./cluster/registry.js');
  return new ClusterRegistry({ endpoints: config.etcdEndpoints, hostId: id.hostId, vtep: id.vtep, addrs: id.addrs, leaseTtl: config.etcdLeaseTtl, log });
}

/**
 * A /run/netns whose mounts do not reach the host's works until the plugin
 * stops, then every overlay namespace ends with it: said at every start,
 * not only when someone runs tsnetctl doctor.
 */
async function reportNetnsDir(dir: string, overlays: number, log: Logger): Promise<void> {
  const reading = await readNetnsDir(dir);
  for (const f of judgeNetnsDir(reading, overlays)) {
    if (f.level === 'ok') log.debug({ netnsDir: dir, mount: reading.mount }, f.message);
    else log.error({ netnsDir: dir, mount: reading.mount }, `${f.message} -> ${f.fix}`);
  }
}

export async function start(config: Config, log: Logger): Promise<{ stop: () => Promise<void>; reconcileNow: () => Promise<void> }> {
  const t0 = performance.now();
  // The managed plugin: the host's /run/netns, made if this boot has none
  // yet; a rootfs that does not lead there is fatal, before anything else.
  if (config.netnsDir) await prepareNetnsDir(config.netnsDir);
  const store = new Store({ dir: config.stateDir, log });
  let registry: ClusterRegistry | undefined;
  let overlay: OverlayManager | undefined;
  const events = new EventBus();
  let names: NamesService | undefined;
  const metrics = new Metrics({
    store,
    overlayForwarding: () => (overlay?.forwarding() ?? []).map((f) => ({ network: f.networkId, peers: f.peers, fdb: f.fdb })),
    ...(config.etcdEndpoints.length > 0 ? { etcd: () => ({ up: registry?.available ?? false, relists: registry?.relists ?? 0 }) } : {}),
    eventSubscribers: () => events.subscribers,
    ...(config.dockerSocket ? { dockerd: () => names?.watcher?.status.connected ?? false } : {}),
    dnsQueries: () => names?.server?.counts ?? {},
  });
  const runner = createRunner(log, undefined, { procSys: config.procSys, onCommand: (cmd, ok) => metrics.command(cmd, ok) });
  const loaded = await store.open();
  if (config.netnsDir) await reportNetnsDir(config.netnsDir, Object.values(store.state.networks).filter((n) => n.overlay).length, log);
  const hold = new AllocationHold();
  if (loaded.source === 'previous') {
    // One generation may be lost: addresses handed out in it are unknown, so
    // none are handed out until an operator has looked.
    hold.reason =
      `the state loaded may lack recent changes: ${loaded.problems.join('; ')}. ` +
      `Addresses allocated just before that are unknown, so tsnet hands out none until an operator checks ` +
      `(docker network inspect, running containers) and runs "tsnetctl accept-state"`;
    log.error({ problems: loaded.problems, source: loaded.source }, `state store damaged; loaded the last good copy; address allocation paused: ${hold.reason}`);
    // Survives restarts until accepted, even once state.json is rewritten.
    await fs.writeFile(hold.file(store.dir), `${hold.reason}\n`, { mode: 0o600 });
  } else {
    if (loaded.source === 'recovered') {
      log.warn({ problems: loaded.problems, source: loaded.source }, `state store damaged; rebuilt from ${store.prevFile} and the journal with every change; the damaged file is kept as ${store.file}.bad`);
    }
    const kept = await fs.readFile(hold.file(store.dir), 'utf8').catch(() => undefined);
    if (kept) {
      hold.reason = kept.trim();
      log.error(`address allocation still paused: ${hold.reason}`);
    }
  }
  // A bad advertise address fails here, before listening; etcd3 loads later.
  const identity = config.etcdEndpoints.length > 0 ? await clusterIdentity(config, store, runner) : undefined;
  const services = buildServices({
    runner,
    store,
    log,
    defaultPools: config.defaultPools,
    vxlanPort: config.vxlanPort,
    advertiseAddr: config.advertiseAddr,
    wgPort: config.wgPort,
    wgMtu: config.wgMtu,
    readOnlyReason: () => hold.reason,
    hostRun: config.hostRun,
  });
  const { firewall, ports, modes, driver, ipam, cluster } = services;
  overlay = services.overlay;
  overlay.onPeers = (network, joined, left) => {
    for (const vtep of joined) events.emit('peer.joined', { network, vtep });
    for (const vtep of left) events.emit('peer.left', { network, vtep });
  };
  let reconcileNow: () => Promise<void> = async () => undefined;
  // The doctor reads with a runner of its own: its probes of things that may
  // be missing are not kernel command failures of tsnet's.
  const doctorRunner = createRunner(log, undefined, { procSys: config.procSys });
  const doctor = (): ReturnType<typeof runDoctor> =>
    runDoctor({
      runner: doctorRunner,
      store,
      overlay: overlay!,
      routed: services.routed,
      registry: () => registry,
      etcdConfigured: config.etcdEndpoints.length > 0,
      vxlanPort: config.vxlanPort,
      loaded,
      hold: () => hold.reason,
      names: async () => names?.status(),
      netnsDir: config.netnsDir,
    });
  const observe = observeAnswers(metrics, events, store);
  const app = buildApp({
    driver,
    ipam,
    log,
    metrics,
    onAnswer: (a) => {
      observe(a);
      // A new overlay's gateway address is one more place to answer DNS on.
      if (a.status === 200 && (a.method === 'NetworkDriver.CreateNetwork' || a.method === 'NetworkDriver.DeleteNetwork')) void names?.syncListeners();
    },
    admin: (a) =>
      registerAdminRoutes(a, {
        store,
        modes,
        hold,
        reconcileNow: () => reconcileNow(),
        startedAt: new Date(),
        doctor,
        events,
        names: async () => (names ? await names.status() : { loading: true }),
        overlay: overlay!,
        ...(config.etcdEndpoints.length > 0 ? { cluster: () => registry } : {}),
      }),
  });

  await prepareSocket(config.socket, log);
  // Create the socket 0660 from the start rather than chmod-ing after listen.
  const oldMask = process.umask(0o117);
  try {
    await app.listen({ path: config.socket });
  } finally {
    process.umask(oldMask);
  }
  await fs.chmod(config.socket, 0o660);
  log.info(
    {
      socket: config.socket,
      stateDir: config.stateDir,
      networks: Object.keys(store.state.networks).length,
      endpoints: Object.keys(store.state.endpoints).length,
      pools: Object.keys(store.state.pools).length,
      storeSource: loaded.source,
      ms: +(performance.now() - t0).toFixed(1),
    },
    'tsnet listening',
  );

  // prom-client loads once the socket is up; what came before is replayed into it.
  void metrics.load().catch((err: unknown) => log.error({ err }, 'cannot load the metrics library; GET /metrics will fail'));
  // Networking matters more than its figures: a taken port is logged, not fatal.
  const metricsServer = config.metricsAddr
    ? await listenMetrics(config.metricsAddr, metrics, log).catch((err: unknown) => {
        log.error({ err }, `TSNET_METRICS_ADDR: cannot listen on ${config.metricsAddr!.host}:${config.metricsAddr!.port}: ${(err as Error).message}; /metrics is on the plugin socket only`);
        return undefined;
      })
    : undefined;

  // Names across hosts: the Engine API client and the DNS server, loaded
  // now the socket listens and never waited on by a request (dockerd may
  // not serve its API yet: it starts restart-policy containers first).
  if (config.dockerSocket || config.dns) {
    void import('./dns/service.js')
      .then(({ NamesService }) => {
        names = new NamesService({
          store,
          log,
          dockerSocket: config.dockerSocket,
          dns: config.dns,
          // Other hosts' names: the overlay's last view of etcd, kept while etcd is away.
          remote: (networkId) => cluster.view(networkId)?.endpoints.entries(),
          hostId: () => cluster.hostId,
          onNames: (ids) => {
            for (const id of ids) cluster.republish(id);
          },
        });
        names.start();
      })
      .catch((err: unknown) => log.error({ err }, 'cannot load the names service; container names will not resolve across hosts'));
  }

  let reconciling: Promise<void> = Promise.resolve();
  reconcileNow = (): Promise<void> => {
    reconciling = reconciling.then(async () => {
      const started = performance.now();
      try {
        const report = await driver.exclusive(() => reconcile({ runner, store, firewall, ports, modes, log, keepUnknown: hold.reason !== undefined }));
        metrics.reconciled(report, (performance.now() - started) / 1000);
        const fixed = reconcileFixes(report);
        if (fixed) events.emit('reconcile.fixed', fixed);
        log.info({ ...report }, 'reconcile finished');
        void names?.syncListeners();
        // After the reconcile, which moved overlays' VXLAN ports to a new address: publish it.
        if (registry) {
          const now = await hostAddresses(config, runner).catch(() => undefined);
          if (now) registry.moveTo(now.vtep, now.addrs);
        }
      } catch (err) {
        metrics.reconciled(undefined, (performance.now() - started) / 1000);
        throw err;
      }
    }).catch((err: unknown) => log.error({ err }, 'reconcile failed'));
    return reconciling;
  };
  if (identity) {
    await driver.exclusive(async () => {
      registry = await openRegistry(config, identity, log);
      cluster.attachRegistry(registry);
      registry.start();
    });
  }
  void reconcileNow();

  let timer: NodeJS.Timeout | undefined;
  if (config.reconcileInterval > 0) {
    timer = setInterval(() => void reconcileNow(), config.reconcileInterval * 1000);
    timer.unref();
  }

  const stop = async (): Promise<void> => {
    if (timer) clearInterval(timer);
    await metricsServer?.close();
    await app.close();
    await names?.close();
    await reconciling;
    await ports.closeAll();
    overlay!.close();
    await cluster.close();
    await registry?.close();
    await store.close();
  };
  return { stop, reconcileNow };
}

/**
 * Leave after a fatal start-up error. As PID 1 (the managed plugin, in its
 * own PID namespace) wait for SIGTERM instead: dockerd 20.10 restarts a
 * plugin that exits while `docker plugin enable` waits for its socket, the
 * restart races with its clean-up, and the next enable fails with "id
 * already in use". Waiting until dockerd gives up (~10 s) and stops us
 * leaves one log line and a clean, failed enable.
 */
export function exitFatal(code: number): void {
  if (process.pid !== 1) process.exit(code);
  const leave = (): never => process.exit(code);
  process.once('SIGTERM', leave);
  process.once('SIGINT', leave);
  setInterval(() => undefined, 1 << 30);
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    process.stderr.write(`${JSON.stringify({ level: 'fatal', name: 'tsnet', msg: (err as Error).message })}\n`);
    return exitFatal(2);
  }
  const log = createLogger(config.logLevel);
  let running: Awaited<ReturnType<typeof start>>;
  try {
    running = await start(config, log);
  } catch (err) {
    log.fatal({ err }, `tsnet cannot start: ${(err as Error).message}`);
    log.flush(() => exitFatal(1));
    return;
  }
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) {
      log.warn({ signal }, 'second signal; exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'shutting down; networks and containers stay as they are');
    running
      .stop()
      .then(() => {
        log.info('stopped');
        log.flush(() => process.exit(0));
      })
      .catch((err: unknown) => {
        log.error({ err }, 'unclean shutdown');
        process.exit(1);
      });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => {
    log.info('SIGHUP: reconciling');
    void running.reconcileNow();
  });
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname);
if (isMain) void main();
