// Print "N passed, N failed" from tap's per-file TAP results: every
// top-level test point of every file (a subtest or a top-level assertion),
// in every directory under the one given (scripts/test.sh keeps one per
// run: the e2e files run once per dockerd). A file that crashed before
// reporting counts as one failure. A skipped point is neither: it is listed
// and counted on a line of its own, so a skip never reads as a pass.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

const dir = process.argv[2] ?? '.tap/results';
let passed = 0;
let failed = 0;
let skipped = 0;
const failures = [];
const skips = [];
function walk(d) {
  for (const e of readdirSync(d)) {
    const p = path.join(d, e);
    if (statSync(p).isDirectory()) walk(p);
    else if (p.endsWith('.tap')) count(p);
  }
}
function count(file) {
  const lines = readFileSync(file, 'utf8').split('\n');
  let points = 0;
  let plan = /^1\.\.\d+/;
  let sawPlan = false;
  for (const line of lines) {
    if (plan.test(line)) sawPlan = true;
    const m = /^(not )?ok \d+( - (.*))?/.exec(line);
    if (!m) continue;
    points++;
    const skip = /# SKIP\b/i.test(m[3] ?? '');
    if (skip && !m[1]) {
      skipped++;
      skips.push(`${path.relative(dir, file)}: ${m[3]}`);
    } else if (m[1]) {
      failed++;
      failures.push(`${path.relative(dir, file)}: ${m[3] ?? ''}`);
    } else passed++;
  }
  if (points === 0 || !sawPlan) {
    failed++;
    failures.push(`${path.relative(dir, file)}: no complete results (crashed or timed out)`);
  }
}
try {
  walk(dir);
} catch {
  failed++;
  failures.push(`no results in ${dir}`);
}
for (const s of skips) console.log(`SKIPPED ${s}`);
for (const f of failures) console.log(`FAILED ${f}`);
if (skipped > 0) console.log(`${skipped} skipped`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
