// Run by test/lifecycle.test.js as its own Node process: uses every kind of
// client against the service whose addresses are in argv[2] (JSON), closes
// them, prints the process's active resources before and after, and then
// must exit on its own (nothing here calls process.exit).

import { ConnectFailed, RequestTimeout, TcpClient, UdpClient, UdsClient } from '../index.js';

const { tcp, udp, uds, deadPort } = JSON.parse(process.argv[2]);

const clients = [
  new TcpClient({ ...tcp, heartbeatInterval: 20 }),
  new UdsClient({ path: uds, heartbeatInterval: 20 }),
  new TcpClient({ ...tcp, persistent: false }),
  new UdsClient({ path: uds, persistent: false }),
  new UdpClient(udp),
];
for (const client of clients) {
  const reply = await client.request('echo', { message: 'bye' });
  if (reply.message !== 'bye') throw new Error(`unexpected reply ${JSON.stringify(reply)}`);
}
// Leave some state behind: a timed-out request (its uid stays reserved for a
// while), a heartbeat in progress, a failed connect.
try {
  await clients[0].request('sleep', { seconds: 0.2 }, { timeout: 50 });
  throw new Error('expected a timeout');
} catch (err) {
  if (!(err instanceof RequestTimeout)) throw err;
}
await new Promise((resolve) => clients[0].once('heartbeat', resolve));
const dead = new TcpClient({ host: '127.0.0.1', port: deadPort, retries: 0 });
try {
  await dead.request('echo');
  throw new Error('expected ConnectFailed');
} catch (err) {
  if (!(err instanceof ConnectFailed)) throw err;
}

const before = process.getActiveResourcesInfo();
await Promise.all([...clients, dead].map((client) => client.close()));
const after = process.getActiveResourcesInfo();
console.log(JSON.stringify({ before, after }));
