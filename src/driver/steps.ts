// A named step list with an undo per step, after moby's bridgeSetup queue:
// steps run in order; on the first failure the completed ones are undone in
// reverse and the original error is rethrown. Undo failures are logged next
// to the original error, never instead of it.
import type { Logger } from 'pino';

export interface Step {
  readonly name: string;
  /** skip the step when false */
  readonly when?: boolean;
  do(): Promise<void>;
  undo?(): Promise<void>;
}

/** Failure injection for tests: TSNET_TEST_FAIL_AFTER_STEP=<name> fails right after that step. */
function injectedFailure(name: string): Error | undefined {
  const target = process.env.TSNET_TEST_FAIL_AFTER_STEP;
  if (target && target === name) return new Error(`injected failure after step ${name}`);
  return undefined;
}

export async function runSteps(steps: readonly Step[], log: Logger): Promise<() => Promise<void>> {
  const done: Step[] = [];
  const undoAll = async (): Promise<void> => {
    const errors: unknown[] = [];
    for (const step of [...done].reverse()) {
      if (!step.undo) continue;
      try {
        await step.undo();
      } catch (err) {
        errors.push(err);
        log.error({ err, step: step.name }, 'undo failed');
      }
    }
    done.length = 0;
    if (errors.length > 0) throw new AggregateError(errors, 'some undo steps failed');
  };
  for (const step of steps) {
    if (step.when === false) continue;
    const started = performance.now();
    try {
      await step.do();
      done.push(step);
      const injected = injectedFailure(step.name);
      if (injected) throw injected;
    } catch (err) {
      log.warn({ err, step: step.name }, 'step failed, undoing completed steps');
      await undoAll().catch(() => undefined);
      throw err;
    }
    log.trace({ step: step.name, ms: +(performance.now() - started).toFixed(2) }, 'step done');
  }
  // The caller may still fail later (e.g. at the store write) and undo everything.
  return undoAll;
}
