// Golden files for rendered firewall scripts (test/golden/*). A test compares
// its output with the stored text; UPDATE_GOLDEN=1 rewrites the files instead
// (review the diff before committing). A missing file fails with that hint.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';

export const GOLDEN_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'golden');

export function matchGolden(t: Test, name: string, actual: string): void {
  const file = path.join(GOLDEN_DIR, name);
  if (process.env.UPDATE_GOLDEN === '1') {
    mkdirSync(GOLDEN_DIR, { recursive: true });
    writeFileSync(file, actual);
    t.pass(`golden ${name} rewritten`);
    return;
  }
  if (!existsSync(file)) {
    t.fail(`golden file ${file} is missing; run with UPDATE_GOLDEN=1 to create it`);
    return;
  }
  t.equal(actual, readFileSync(file, 'utf8'), `matches golden ${name}`);
}
