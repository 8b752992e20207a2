// Which dockerd the lab runs, chosen by one setting, TSNET_LAB_DOCKERD:
//   20 (default)  Debian 12's docker.io 20.10 from the machine's packages
//   26            Debian 13's docker.io 26.1, unpacked by scripts/fetch-dockerd.sh
//   /some/dir     any such unpacked tree (usr/sbin/dockerd, docker-proxy, usr/bin/docker)
// dockerd, its docker-proxy and the CLI always come from the same build:
// dockerd 28 refuses a docker-proxy of another version (modern-dockerd.md §4),
// and the CLI of the build speaks its API.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

export interface DockerdBuild {
  /** "20.10", "26.1", …: the series, as test names and the README's table say it */
  series: string;
  major: number;
  dockerd: string;
  proxy: string;
  cli: string;
  /** pinned for the CLI (DOCKER_API_VERSION); undefined lets it negotiate */
  apiVersion: string | undefined;
}

export const DOCKERD26_DIR = process.env.TSNET_DOCKERD26_DIR ?? '/opt/tsnet-test/docker-26';

// The highest API each series serves (moby's api/common.go per release).
const API: Record<string, string> = { '20.10': '1.41', '23.0': '1.42', '24.0': '1.43', '25.0': '1.44', '26.0': '1.45', '26.1': '1.45', '27.0': '1.46', '27.1': '1.46' };

function fromTree(root: string, setting: string): DockerdBuild {
  const dockerd = path.join(root, 'usr/sbin/dockerd');
  if (!existsSync(dockerd)) {
    throw new Error(`TSNET_LAB_DOCKERD=${setting}: ${dockerd} is missing (scripts/fetch-dockerd.sh ${root} unpacks it)`);
  }
  const out = execFileSync(dockerd, ['--version'], { encoding: 'utf8' });
  const m = /version (\d+)\.(\d+)/.exec(out);
  if (!m) throw new Error(`TSNET_LAB_DOCKERD=${setting}: cannot read a version from "${out.trim()}"`);
  const series = `${m[1]}.${m[2]}`;
  return { series, major: Number(m[1]), dockerd, proxy: path.join(root, 'usr/sbin/docker-proxy'), cli: path.join(root, 'usr/bin/docker'), apiVersion: API[series] };
}

export function dockerdBuild(setting = process.env.TSNET_LAB_DOCKERD ?? '20'): DockerdBuild {
  if (setting === '' || setting === '20') {
    return { series: '20.10', major: 20, dockerd: '/usr/sbin/dockerd', proxy: '/usr/sbin/docker-proxy', cli: '/usr/bin/docker', apiVersion: '1.41' };
  }
  if (setting === '26') return fromTree(DOCKERD26_DIR, setting);
  if (path.isAbsolute(setting)) return fromTree(setting, setting);
  throw new Error(`TSNET_LAB_DOCKERD: "${setting}" is not 20, 26 or an absolute directory`);
}

/** The lab's build, read once per test process. */
export const DOCKERD = dockerdBuild();

/** The docker CLI's environment for the lab's build. */
export function cliEnv(): Record<string, string> {
  return DOCKERD.apiVersion ? { DOCKER_API_VERSION: DOCKERD.apiVersion } : {};
}

/**
 * false when scripts/test.sh runs the e2e tier a second time (TSNET_LAB_HEAVY=0):
 * the parts that measure scale, not the dockerd, then report a skip instead
 * of running twice.
 */
export const HEAVY = process.env.TSNET_LAB_HEAVY !== '0';

/** tap's skip option for a heavy subtest. */
export function heavyOnly(): { skip: string | false } {
  return { skip: HEAVY ? false : `heavy: runs once, in the dockerd 20.10 run (this is ${DOCKERD.series})` };
}
