// What every answered plugin request feeds: its count, outcome and latency
// into the metrics, and, when it succeeded and changed something an
// operator follows, an event. One function so main.ts and the API tests
// wire the same thing.
import type { Answer } from './app.js';
import { eventForRequest, type EventBus } from './events.js';
import type { Metrics } from './metrics/registry.js';
import type { Store } from './store/store.js';

export function observeAnswers(metrics: Metrics, events: EventBus, store: Store): (a: Answer) => void {
  return (a) => {
    metrics.request(a.method, a.outcome, a.seconds);
    if (a.status !== 200) return;
    const ev = eventForRequest(a.method, a.body, store.state);
    if (ev) events.emit(ev.type, ev.fields);
  };
}
