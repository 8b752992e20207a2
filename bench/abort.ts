// Clean-up on Ctrl-C or SIGTERM for what the bench creates outside a lab
// (test/helpers/lab.ts cleans its own labs): namespaces, plugin processes
// and temporary directories of the scale and control-plane figures.
const jobs = new Set<() => Promise<unknown>>();
let installed = false;
let aborting = false;

/** True once an interrupt started the clean-up: errors of the interrupted work are expected then. */
export function isAborting(): boolean {
  return aborting;
}

/** Run `fn` if the bench is interrupted while it is registered; returns the unregister function. */
export function onAbort(fn: () => Promise<unknown>): () => void {
  install();
  jobs.add(fn);
  return () => void jobs.delete(fn);
}

function install(): void {
  if (installed) return;
  installed = true;
  const handler = (signal: NodeJS.Signals): void => {
    // A second signal (a wrapper passing Ctrl-C on, say) must not cut the clean-up short.
    if (aborting) return;
    const pending = [...jobs];
    // A lab running now has its own handler (it stops the lab, then exits).
    if (pending.length === 0 && process.listenerCount(signal) > 1) return;
    aborting = true;
    jobs.clear();
    process.stderr.write(`bench: ${signal}: cleaning up\n`);
    void (async () => {
      for (const job of pending) await job().catch(() => undefined);
      process.exit(130);
    })();
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}
