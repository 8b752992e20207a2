// Used by the Dockerfile: fill in the `resolved` tarball URL of every
// registry package in package-lock.json (this project's lockfile omits them,
// npm's omit-lockfile-registry-resolved). Without them `npm ci` fetches each
// package's metadata from the registry to find its tarball; with them it
// needs only the tarballs, which an offline build finds in the npm cache by
// URL and integrity. Changes only the build's copy of the lockfile.
import { readFileSync, writeFileSync } from 'node:fs';

const [lockPath, registry] = process.argv.slice(2);
const base = (registry ?? 'https://registry.npmjs.org/').replace(/\/?$/, '/');
const lock = JSON.parse(readFileSync(lockPath, 'utf8'));
let filled = 0;
for (const [key, pkg] of Object.entries(lock.packages ?? {})) {
  if (key === '' || pkg.link || pkg.resolved || !pkg.version || !pkg.integrity) continue;
  const name = pkg.name ?? key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length);
  pkg.resolved = `${base}${name}/-/${name.split('/').pop()}-${pkg.version}.tgz`;
  filled++;
}
writeFileSync(lockPath, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`lock-resolved: ${filled} tarball URLs from ${base}`);
