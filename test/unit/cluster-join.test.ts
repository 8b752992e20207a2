// ClusterNetworks' joins: a join etcd did not take is tried again by
// itself, so a host whose lease survived (a short outage, a new address
// while the old connection hung) still publishes what it now says.
import t from 'tap';
import { EventEmitter } from 'node:events';
import { ClusterNetworks } from '../../src/cluster/networks.js';
import type { ClusterRegistry } from '../../src/cluster/registry.js';
import type { EndpointRecord, NetworkRecord } from '../../src/store/schema.js';
import { Store } from '../../src/store/store.js';
import { dockerId, keepAlive, silentLogger, tmpDir, until } from '../helpers/fake-runner.js';

/** The registry's surface ClusterNetworks uses, with joins that fail while `down`. */
class FlakyRegistry extends EventEmitter {
  hostId = 'me';
  vtep = '10.99.0.13';
  down = true;
  joins = 0;
  published: Array<{ endpointId: string; vtep: string }> = [];
  async join(): Promise<void> {
    this.joins++;
    if (this.down) throw new Error('etcd did not answer (get network) within 3s');
  }
  async publishEndpoint(_subnet: string, endpointId: string, _ep: unknown, vtep: string): Promise<void> {
    this.published.push({ endpointId, vtep });
  }
  watchNetwork(): { close: () => Promise<void> } {
    return { close: async () => undefined };
  }
}

t.test('a failed join is tried again, backing off, and then publishes the endpoints from the current address', async (t) => {
  const store = new Store({ dir: await tmpDir(t, 'cluster-join'), log: silentLogger(), noSync: true });
  await store.open();
  t.teardown(() => keepAlive(() => store.close()));
  const id = dockerId();
  const net = {
    id, mode: 'overlay', bridge: 'tsbr-o', createdBridge: true, ipv4: [{ pool: '10.220.0.0/16', gateway: '10.220.0.1/16', aux: {} }], ipv6: [], internal: false, mtu: 1450, masquerade: true, icc: true, gatewayMode: 'nat', hostBindingIpv4: '0.0.0.0', inhibitIpv4: false, ifacePrefix: 'eth', trustedHostInterfaces: [], options: {}, createdAt: new Date().toISOString(),
    cluster: { subnet: '10.220.0.0/16', pools: [] },
  } as unknown as NetworkRecord;
  const epId = dockerId();
  store.state.networks[id] = net;
  store.state.endpoints[epId] = { id: epId, networkId: id, address: '10.220.0.5/16', mac: '02:42:0a:dc:00:05' } as unknown as EndpointRecord;
  const registry = new FlakyRegistry();
  const cluster = new ClusterNetworks({ store, log: silentLogger(), registry: registry as unknown as ClusterRegistry });
  t.teardown(() => cluster.close());
  cluster.follow(net, { endpoints: { vtep: (local) => `tunnel-of-${local}` } });
  await until('the first join', () => registry.joins === 1, 1000);
  // The address changes while etcd does not answer: nothing more triggers a join.
  registry.vtep = '10.99.0.33';
  await until('a second try, a second after the first', () => registry.joins === 2, 2500);
  t.same(registry.published, [], 'nothing published while joins fail');
  registry.down = false;
  await until('a third try, two seconds later', () => registry.joins === 3, 4000);
  await until('the endpoint published', () => registry.published.length === 1, 1000);
  t.same(registry.published, [{ endpointId: epId, vtep: 'tunnel-of-10.99.0.33' }], 'the endpoint, from the address the host has now');
  await new Promise((r) => setTimeout(r, 2500));
  t.equal(registry.joins, 3, 'no more tries once one succeeded');
});

t.test('no retry for a network no longer followed', async (t) => {
  const store = new Store({ dir: await tmpDir(t, 'cluster-join'), log: silentLogger(), noSync: true });
  await store.open();
  t.teardown(() => keepAlive(() => store.close()));
  const id = dockerId();
  const net = { id, mode: 'overlay', ipv4: [], ipv6: [], cluster: { subnet: '10.221.0.0/16', pools: [] } } as unknown as NetworkRecord;
  store.state.networks[id] = net;
  const registry = new FlakyRegistry();
  const cluster = new ClusterNetworks({ store, log: silentLogger(), registry: registry as unknown as ClusterRegistry });
  cluster.follow(net);
  await until('the first join', () => registry.joins === 1, 1000);
  await cluster.stop(net, { leave: false });
  await new Promise((r) => setTimeout(r, 1500));
  t.equal(registry.joins, 1, 'stopped following: the retry is cancelled');
});
