// Print "N passed, N failed" from tap's per-file TAP results: every
// top-level test point of every file (a subtest or a top-level assertion).
// A file that crashed before reporting counts as one failure.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

const dir = process.argv[2] ?? '.tap/test-results';
let passed = 0;
let failed = 0;
const failures = [];
// A test skipped for a reason (a kernel without ipvlan, say) is neither a
// pass nor a failure: it is listed with its reason and left out of both.
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
    const skip = /#\s*SKIP\b:?\s*(.*)$/i.exec(line);
    if (!m[1] && skip) {
      skips.push(`${path.relative(dir, file)}: ${(m[3] ?? '').replace(/\s*#\s*SKIP.*$/i, '')} (skipped: ${skip[1] || 'no reason given'})`);
      continue;
    }
    if (m[1]) {
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
if (skips.length > 0) console.log(`${skips.length} skipped`);
for (const f of failures) console.log(`FAILED ${f}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
