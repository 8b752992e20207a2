// The services and how they are wired, in one place for the process and
// the API-tier tests alike: whoever wires IPAM hands it the host's routes,
// so IPAM itself never reads the kernel.
import type { Logger } from 'pino';
import type { DefaultPool } from './config.js';
import { ClusterNetworks } from './cluster/networks.js';
import { NetworkDriverService } from './driver/driver.js';
import { ModeRegistry } from './driver/modes/registry.js';
import { Firewall } from './firewall/firewall.js';
import { IpamService } from './ipam/ipam.js';
import type { Runner } from './kernel/exec.js';
import { listRoutes } from './kernel/ip.js';
import { OverlayManager } from './overlay/manager.js';
import { RoutedManager } from './routed/manager.js';
import { PortPublisher } from './ports/publisher.js';
import { DEFAULT_WG_PORT, WireGuardHost } from './wireguard/host.js';
import type { Store } from './store/store.js';

export interface ServiceOptions {
  runner: Runner;
  store: Store;
  log: Logger;
  defaultPools: DefaultPool[];
  vxlanPort: number;
  advertiseAddr: string | undefined;
  /** WireGuard for encrypted overlays (TSNET_WG_PORT, TSNET_WG_MTU) */
  wgPort?: number;
  wgMtu?: number | undefined;
  readOnlyReason?: () => string | undefined;
  /** the managed plugin's view of the host's /run (TSNET_HOST_RUN) */
  hostRun?: string | undefined;
}

export type Services = ReturnType<typeof buildServices>;

export function buildServices(o: ServiceOptions) {
  const { runner, store, log } = o;
  const firewall = new Firewall(runner, log);
  const ports = new PortPublisher({ runner, firewall, log });
  // The registry (etcd) is attached once it is open; until then only static overlays work.
  const cluster = new ClusterNetworks({ store, log });
  const wireguard = new WireGuardHost({ runner, log, stateDir: store.dir, port: o.wgPort ?? DEFAULT_WG_PORT, vxlanPort: o.vxlanPort, ...(o.wgMtu !== undefined ? { mtu: o.wgMtu } : {}) });
  const overlay = new OverlayManager({ runner, store, cluster, log, vxlanPort: o.vxlanPort, advertiseAddr: o.advertiseAddr, wireguard });
  const routed = new RoutedManager({ runner, store, cluster, log, advertiseAddr: o.advertiseAddr });
  // Overlays with tsnet.backend=auto: same-LAN members are routed to, the rest stay on VXLAN.
  overlay.directRoutes = (net, view) => routed.direct(net, view);
  const modes = new ModeRegistry({ runner, store, firewall, overlay, routed, cluster, log, hostRun: o.hostRun });
  const driver = new NetworkDriverService({ store, ports, modes });
  const ipam = new IpamService({
    store,
    log,
    defaultPools: o.defaultPools,
    hostRoutes: (v6) => listRoutes(runner, v6 ? 6 : 4),
    ...(o.readOnlyReason ? { readOnlyReason: o.readOnlyReason } : {}),
    cluster,
  });
  return { firewall, ports, cluster, overlay, routed, modes, driver, ipam };
}
