// npm run plugin:build: the Dockerfile's image becomes a managed plugin.
//
//   npm run plugin:build                       # public base image, npm registry
//   npm run plugin:build -- --offline          # no registry: a debootstrap base and the host's npm cache
//   npm run plugin:build -- --host unix:///path/docker.sock --name tsnet --no-create
//
// Steps: (offline) make the base image tsnet-base:local if the daemon lacks
// it; docker build; export a container of the image into plugin/build/rootfs;
// copy config.json next to it; docker plugin create NAME plugin/build.
// Everything goes through the docker CLI against one daemon (--host).
import { spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';

export const REPO = path.resolve(new URL('.', import.meta.url).pathname, '..');
export const BUILD_DIR = path.join(REPO, 'plugin', 'build');
export const LOCAL_BASE = 'tsnet-base:local';
const NPM_CACHE_DIR = path.join(REPO, 'plugin', 'npm-cache');
const IMAGE = 'tsnet-plugin-rootfs:build';
const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface BuildOptions {
  /** the docker CLI (default: $DOCKER or docker) */
  docker?: string;
  /** dockerd to talk to (docker -H); default: the CLI's own (DOCKER_HOST, context) */
  host?: string;
  /** environment for every command run (the docker CLI, npm, debootstrap) */
  env?: NodeJS.ProcessEnv;
  /** no registry: base image made with debootstrap, npm packages from the host's npm cache */
  offline?: boolean;
  /** BASE_IMAGE build argument (default: the Dockerfile's, or tsnet-base:local when offline) */
  baseImage?: string;
  /** plugin name (default tsnet; dockerd adds the tag :latest) */
  name?: string;
  /** run docker plugin create (default true) */
  create?: boolean;
  /** Debian mirror for debootstrap */
  mirror?: string;
  /** where the bundle (config.json + rootfs/) goes (default plugin/build) */
  outDir?: string;
  /** progress lines (default: to stderr) */
  log?: (line: string) => void;
}

export interface BuildResult {
  bundleDir: string;
  rootfsBytes: number;
  /** the registered name, e.g. tsnet:latest (undefined without create) */
  plugin: string | undefined;
  seconds: Record<string, number>;
}

async function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<string> {
  const res = await execa(cmd, args, { reject: false, all: true, env: opts.env ?? process.env, extendEnv: false, ...(opts.input !== undefined ? { input: opts.input } : {}) });
  if (res.exitCode !== 0) {
    const out = String(res.all ?? '').trim().split('\n').slice(-25).join('\n');
    throw new Error(`${cmd} ${args.join(' ')} failed (exit ${res.exitCode}):\n${out}`);
  }
  return String(res.stdout ?? '');
}

async function timed<T>(seconds: Record<string, number>, what: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    return await fn();
  } finally {
    seconds[what] = +((performance.now() - t0) / 1000).toFixed(1);
  }
}

async function du(dir: string): Promise<number> {
  return Number((await run('du', ['-sb', dir])).split('\t')[0]);
}

/** The bundle's rootfs size in bytes (du -sb). */
export const rootfsBytes = (bundleDir: string): Promise<number> => du(path.join(bundleDir, 'rootfs'));

/** The node binary to put in the local base: this machine's, which must be Node 20. */
function hostNode(): { node: string; version: string } {
  const version = process.version;
  if (!version.startsWith('v20.')) throw new Error(`the local base needs Node 20; this is ${version} (${process.execPath})`);
  return { node: process.execPath, version };
}

/**
 * A Debian bookworm root made by debootstrap (minbase plus the tools tsnet
 * runs) with this machine's Node 20 and npm, as a tarball cached in
 * plugin/build (no registry involved, only Debian's package mirror).
 */
export async function localBaseTar(opts: Pick<BuildOptions, 'mirror' | 'log' | 'env'> = {}): Promise<string> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const env = opts.env ?? process.env;
  const { node, version } = hostNode();
  const tar = path.join(BUILD_DIR, `base-bookworm-wg-node${version}.tar`);
  if (existsSync(tar)) return tar;
  const root = path.join(BUILD_DIR, `base-root.${process.pid}.tmp`);
  await fs.rm(root, { recursive: true, force: true });
  await fs.mkdir(BUILD_DIR, { recursive: true });
  const mirror = opts.mirror ?? process.env.DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';
  log(`debootstrap bookworm from ${mirror} (once; cached as ${path.relative(REPO, tar)})`);
  await run('debootstrap', ['--variant=minbase', '--include=iproute2,nftables,iptables,conntrack,wireguard-tools,wireguard-go', 'bookworm', root, mirror], { env });
  for (const junk of ['var/cache/apt', 'var/lib/apt/lists', 'usr/share/doc', 'usr/share/man', 'usr/share/locale', 'usr/share/info']) {
    await fs.rm(path.join(root, junk), { recursive: true, force: true });
  }
  await fs.mkdir(path.join(root, 'usr/local/bin'), { recursive: true });
  await fs.copyFile(node, path.join(root, 'usr/local/bin/node'));
  await fs.chmod(path.join(root, 'usr/local/bin/node'), 0o755);
  // npm for the build stages: the one that comes with this node.
  const npmCli = await fs.realpath((await run('sh', ['-c', 'command -v npm'], { env })).trim());
  const npmDir = path.resolve(path.dirname(npmCli), '..');
  await fs.mkdir(path.join(root, 'usr/local/lib/node_modules'), { recursive: true });
  await run('cp', ['-a', npmDir, path.join(root, 'usr/local/lib/node_modules/npm')]);
  await fs.symlink('../lib/node_modules/npm/bin/npm-cli.js', path.join(root, 'usr/local/bin/npm'));
  await fs.symlink('../lib/node_modules/npm/bin/npx-cli.js', path.join(root, 'usr/local/bin/npx'));
  await run('tar', ['-C', root, '--numeric-owner', '-cf', `${tar}.${process.pid}.tmp`, '.']);
  await fs.rename(`${tar}.${process.pid}.tmp`, tar);
  await fs.rm(root, { recursive: true, force: true });
  return tar;
}

export async function buildPlugin(opts: BuildOptions = {}): Promise<BuildResult> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const docker = opts.docker ?? process.env.DOCKER ?? 'docker';
  const env = opts.env ?? process.env;
  const d = (args: string[], o: { input?: string } = {}): Promise<string> => run(docker, [...(opts.host ? ['-H', opts.host] : []), ...args], { env, ...o });
  const name = opts.name ?? 'tsnet';
  const seconds: Record<string, number> = {};

  let baseImage = opts.baseImage;
  if (opts.offline && !baseImage) {
    baseImage = LOCAL_BASE;
    const have = await d(['image', 'inspect', LOCAL_BASE]).then(() => true, () => false);
    if (!have) {
      const tar = await timed(seconds, 'base', () => localBaseTar({ ...opts, env }));
      log(`docker import ${path.relative(REPO, tar)} ${LOCAL_BASE}`);
      await timed(seconds, 'import', () => d(['import', '--change', `ENV ${PATH_ENV}`, tar, LOCAL_BASE]));
    }
  }

  const cache = path.join(NPM_CACHE_DIR, '_cacache');
  await fs.rm(cache, { recursive: true, force: true });
  try {
    if (opts.offline) {
      // npm ci in the build reads packages from a copy (hard links) of this machine's npm cache.
      const from = path.join((await run('npm', ['config', 'get', 'cache'], { env })).trim(), '_cacache');
      if (!existsSync(from)) throw new Error(`--offline needs an npm cache with the locked packages at ${from}: run npm ci once`);
      await run('cp', ['-al', from, cache], { env }).catch(() => run('cp', ['-a', from, cache], { env }));
    }
    const args = [...(baseImage ? ['--build-arg', `BASE_IMAGE=${baseImage}`] : []), ...(opts.offline ? ['--build-arg', 'NPM_FLAGS=--offline'] : [])];
    log(`docker build ${args.join(' ')} -t ${IMAGE} .`);
    await timed(seconds, 'build', () => d(['build', '-q', ...args, '-t', IMAGE, REPO]));
  } finally {
    await fs.rm(cache, { recursive: true, force: true });
  }

  const outDir = opts.outDir ?? BUILD_DIR;
  const rootfs = path.join(outDir, 'rootfs');
  await fs.rm(rootfs, { recursive: true, force: true });
  await fs.mkdir(rootfs, { recursive: true });
  const cid = (await d(['create', IMAGE])).trim();
  try {
    log(`docker export ${cid.slice(0, 12)} | tar -x -C ${rootfs}`);
    await timed(seconds, 'export', () => exportInto(docker, [...(opts.host ? ['-H', opts.host] : []), 'export', cid], env, rootfs));
  } finally {
    await d(['rm', cid]).catch(() => undefined);
    await d(['rmi', IMAGE]).catch(() => undefined);
  }
  await fs.copyFile(path.join(REPO, 'config.json'), path.join(outDir, 'config.json'));
  const bytes = await du(rootfs);
  log(`plugin bundle ${outDir}: config.json + rootfs/ (${(bytes / 1e6).toFixed(1)} MB)`);

  let plugin: string | undefined;
  if (opts.create !== false) {
    log(`docker plugin create ${name} ${outDir}`);
    await timed(seconds, 'create', () => d(['plugin', 'create', name, outDir]));
    plugin = name.includes(':') ? name : `${name}:latest`;
  }
  return { bundleDir: outDir, rootfsBytes: bytes, plugin, seconds };
}

/** docker export CID | tar -x -C dir, without a shell. */
function exportInto(docker: string, args: string[], env: NodeJS.ProcessEnv, dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const exp = spawn(docker, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const tar = spawn('tar', ['-x', '-C', dir, '--numeric-owner'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    exp.stderr.on('data', (b: Buffer) => (err += b));
    tar.stderr.on('data', (b: Buffer) => (err += b));
    exp.stdout.pipe(tar.stdin);
    let pending = 2;
    const done = (what: string) => (code: number | null): void => {
      if (code !== 0) reject(new Error(`${what} failed (exit ${code}): ${err.trim()}`));
      else if (--pending === 0) resolve();
    };
    exp.once('error', reject).once('close', done('docker export'));
    tar.once('error', reject).once('close', done('tar -x'));
  });
}

function usage(): never {
  process.stderr.write('usage: npm run plugin:build -- [--offline] [--host unix:///path/docker.sock] [--base IMAGE] [--name tsnet] [--no-create]\n');
  process.exit(2);
}

async function main(argv: string[]): Promise<void> {
  const opts: BuildOptions = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => argv[++i] ?? usage();
    if (a === '--offline') opts.offline = true;
    else if (a === '--host' || a === '-H') opts.host = value();
    else if (a === '--base') opts.baseImage = value();
    else if (a === '--name') opts.name = value();
    else if (a === '--no-create') opts.create = false;
    else usage();
  }
  const res = await buildPlugin(opts);
  const shown = res.plugin ?? '(not created)';
  process.stdout.write(`${shown}: rootfs ${(res.rootfsBytes / 1e6).toFixed(1)} MB; seconds ${JSON.stringify(res.seconds)}\n`);
  if (res.plugin) {
    process.stdout.write(`next: mkdir -p /var/lib/tsnet && docker plugin enable ${res.plugin}\n`);
  }
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname);
if (isMain) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`plugin:build: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
