// The one place that knows which network modes exist. Adding a mode: a
// module implementing NetworkMode, an entry here, its name in the store
// schema's mode union, and its tests.
import type { Logger } from 'pino';
import type { NetworkRecord } from '../../store/schema.js';
import { BridgeMode } from './bridge.js';
import type { ModeDeps, ModeName, NetworkMode } from './mode.js';
import { IpvlanMode } from './ipvlan.js';
import { HOST_ACCESS } from './lan.js';
import { MacvlanMode } from './macvlan.js';
import { OverlayMode } from './overlay.js';
import { RoutedMode } from './routed.js';

interface ModeEntry {
  /** tsnet.* options that only this mode accepts */
  options: readonly string[];
  build(deps: ModeDeps, built: { bridge: BridgeMode }): NetworkMode;
}

const MODES: Record<ModeName, ModeEntry> = {
  bridge: { options: [], build: (_deps, built) => built.bridge },
  overlay: { options: ['tsnet.vni', 'tsnet.peers', 'tsnet.encrypt', 'tsnet.backend'], build: (deps, built) => new OverlayMode(deps, built.bridge) },
  routed: { options: ['tsnet.peers'], build: (deps, built) => new RoutedMode(deps, built.bridge) },
  macvlan: { options: [HOST_ACCESS], build: (deps) => new MacvlanMode(deps) },
  ipvlan: { options: [HOST_ACCESS], build: (deps) => new IpvlanMode(deps) },
};

export const DEFAULT_MODE: ModeName = 'bridge';

export const MODE_NAMES = Object.keys(MODES) as ModeName[];

export function isModeName(name: string): name is ModeName {
  return Object.hasOwn(MODES, name);
}

/** Every mode-specific tsnet.* option. */
export const MODE_OPTIONS: readonly string[] = [...new Set(MODE_NAMES.flatMap((m) => MODES[m].options))];

/** The modes an option belongs to; empty for options every mode takes. */
export function modesTaking(option: string): ModeName[] {
  return MODE_NAMES.filter((m) => MODES[m].options.includes(option));
}

export class ModeRegistry {
  readonly #modes: Map<ModeName, NetworkMode>;

  constructor(deps: ModeDeps) {
    const built = { bridge: new BridgeMode(deps) };
    this.#modes = new Map(MODE_NAMES.map((m) => [m, MODES[m].build(deps, built)]));
  }

  get(name: ModeName): NetworkMode {
    return this.#modes.get(name)!;
  }

  /** The network's mode; a record-less endpoint's devices are the default mode's. */
  of(net: Pick<NetworkRecord, 'mode'> | undefined): NetworkMode {
    return this.get(net?.mode ?? DEFAULT_MODE);
  }

  all(): NetworkMode[] {
    return [...new Set(this.#modes.values())];
  }

  /** Leftovers of a network tsnet has no record of: any mode may have made them. */
  async removeOrphanNetwork(id: string, log: Logger): Promise<void> {
    for (const m of this.all()) await m.removeOrphanNetwork?.(id, log);
  }

  async removeOrphanEndpoint(id: string): Promise<void> {
    for (const m of this.all()) await m.removeOrphanEndpoint?.(id);
  }
}
