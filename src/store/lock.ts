// An exclusive lock on the state directory, so two tsnet processes never
// share one store. Node has no flock(2), and a PID file goes stale after a
// kill -9 (or worse, names a reused PID). So a child `flock` holds a real
// kernel lock and runs `cat` on a pipe from us: when this process dies for
// any reason the pipe closes, cat exits and the kernel drops the lock.
import { spawn, type ChildProcess } from 'node:child_process';
import { TsnetError } from '../errors.js';

export interface DirLock {
  release(): Promise<void>;
}

/**
 * Take the lock, retrying for a few seconds: right after a kill -9 the old
 * holder's flock may take a moment to notice its parent is gone.
 */
export async function lockStateDir(lockPath: string, waitMs = 3000): Promise<DirLock> {
  const until = Date.now() + waitMs;
  for (;;) {
    try {
      return await tryLock(lockPath);
    } catch (err) {
      if (!(err instanceof TsnetError) || !err.message.includes('is locked') || Date.now() > until) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function tryLock(lockPath: string, timeoutMs = 5000): Promise<DirLock> {
  const child: ChildProcess = spawn('flock', ['--nonblock', '--exclusive', lockPath, 'cat'], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  // flock exits at once when the lock is taken; our probe write then hits a closed pipe.
  child.stdin?.on('error', () => undefined);
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const acquired = await new Promise<boolean>((resolve, reject) => {
    const timer = setTimeout(() => reject(new TsnetError('TSNET_ERR_STORE', `timed out taking the lock ${lockPath}`)), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new TsnetError('TSNET_ERR_STORE', `cannot run flock for ${lockPath}: ${err.message}`, { cause: err }));
    });
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(false);
    });
    // cat echoes only once flock holds the lock.
    child.stdout?.once('data', () => {
      clearTimeout(timer);
      resolve(true);
    });
    child.stdin?.write('x\n');
  });
  if (!acquired) {
    throw new TsnetError(
      'TSNET_ERR_STORE',
      `state directory is locked by another tsnet process (${lockPath})${stderr ? `: ${stderr.trim()}` : ''}; stop it or give this one its own TSNET_STATE_DIR`,
    );
  }
  // The lock must not keep the event loop alive on its own.
  child.unref();
  (child.stdout as unknown as { unref?: () => void })?.unref?.();
  (child.stderr as unknown as { unref?: () => void })?.unref?.();
  (child.stdin as unknown as { unref?: () => void })?.unref?.();
  return {
    async release() {
      if (child.exitCode !== null) return;
      // Keep the loop alive until flock is gone, or close() never settles.
      child.ref();
      await new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.stdin?.end();
      });
    },
  };
}
