// tsnet.mode=ipvlan: each container an ipvlan child of the parent. Children
// share the parent's MAC (for LANs that allow one MAC per switch port, or
// many containers without filling the switch's tables). In l2 mode the LAN
// sees the containers' addresses behind the parent's MAC; in l3 and l3s the
// parent routes for them, so the containers' subnet need not be the LAN's:
// the LAN's router needs a route to it via this host, and containers get a
// connected default route instead of a gateway (Docker's behaviour).
import { TsnetError } from '../../errors.js';
import { getLink } from '../../kernel/ip.js';
import type { EndpointRecord, NetworkRecord } from '../../store/schema.js';
import { LanMode, type LanKind } from './lan.js';
import type { ModeDeps } from './mode.js';

export const IPVLAN: LanKind = {
  name: 'ipvlan',
  modeOption: 'ipvlan_mode',
  modes: ['l2', 'l3', 'l3s'],
  flagOption: 'ipvlan_flag',
  flags: ['bridge', 'private', 'vepa'],
};

export class IpvlanMode extends LanMode {
  readonly name = 'ipvlan';

  constructor(deps: ModeDeps) {
    super(deps, IPVLAN);
  }

  protected async childMac(net: NetworkRecord): Promise<{ mac: string; fixed: boolean }> {
    const parent = await getLink(this.deps.runner, this.lan(net).parent);
    if (!parent?.address) throw new TsnetError('TSNET_ERR_PARENT', `parent ${this.lan(net).parent} of network ${net.id.slice(0, 12)} is missing`);
    return { mac: parent.address, fixed: true };
  }

  override join(net: NetworkRecord, ep: EndpointRecord): Record<string, unknown> {
    const res = super.join(net, ep);
    if (this.lan(net).mode === 'l2' || net.internal) return res;
    // l3: the parent is every container's next hop, with no address to name.
    delete res.Gateway;
    delete res.GatewayIPv6;
    const routes = [...(net.ipv4.length > 0 ? ['0.0.0.0/0'] : []), ...(net.ipv6.length > 0 ? ['::/0'] : [])];
    return { ...res, StaticRoutes: routes.map((Destination) => ({ Destination, RouteType: 1 })), DisableGatewayService: true };
  }
}
