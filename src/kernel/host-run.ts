// dockerd names a container's network namespace by a path in its own mount
// namespace: the sandbox key, /var/run/docker/netns/<id> with the default
// exec-root. tsnet on the host opens it as given. The managed plugin has a
// /run of its own and the host's at TSNET_HOST_RUN (the manifest's run
// mount, rshared, so the namespaces dockerd mounts later reach it too), so a
// key under the host's /run is opened through that mount. A key elsewhere
// (dockerd --exec-root outside /run) is not reachable from the plugin and is
// returned as it is: opening it fails, and the caller says so.
import path from 'node:path';

const HOST_RUN_PREFIXES = ['/var/run/', '/run/'];

export function sandboxPathHere(key: string, hostRun: string | undefined): string {
  if (hostRun === undefined) return key;
  for (const prefix of HOST_RUN_PREFIXES) {
    if (key.startsWith(prefix)) return path.posix.join(hostRun, key.slice(prefix.length));
  }
  return key;
}
