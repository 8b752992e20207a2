// tsnet.mode=macvlan: each container a macvlan child of the parent, with a
// MAC of its own, so the LAN sees it as one more station (lan.ts has what
// macvlan and ipvlan share).
import type { NetworkRecord } from '../../store/schema.js';
import { LanMode, type LanKind } from './lan.js';
import type { ModeDeps } from './mode.js';

export const MACVLAN: LanKind = {
  name: 'macvlan',
  modeOption: 'macvlan_mode',
  modes: ['bridge', 'private', 'vepa', 'passthru'],
};

export class MacvlanMode extends LanMode {
  readonly name = 'macvlan';

  constructor(deps: ModeDeps) {
    super(deps, MACVLAN);
  }

  protected async childMac(_net: NetworkRecord, proposed: string): Promise<{ mac: string; fixed: boolean }> {
    return { mac: proposed, fixed: false };
  }
}
