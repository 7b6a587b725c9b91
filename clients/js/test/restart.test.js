// The service goes away and comes back on the same Unix socket path.

import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';

import { ConnectFailed, ConnectionLost, UdsClient } from '../index.js';
import { outcome, startServer, tempDir, waitFor } from '../test-support/harness.js';

const dir = tempDir();
const udsPath = join(dir, 's.sock');
let server;
after(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('a persistent client survives a server restart', { timeout: 90000 }, async () => {
  server = await startServer({ dir, udsPath });
  const client = new UdsClient({ path: udsPath, heartbeatInterval: 0 });
  let connects = 0;
  let disconnects = 0;
  client.on('connect', () => { connects += 1; });
  client.on('disconnect', () => { disconnects += 1; });
  try {
    assert.deepEqual(await client.request('echo', { message: 'before' }), { message: 'before' });

    // A graceful stop (SIGTERM) closes the idle connection; the client notices.
    assert.equal((await server.stop('SIGTERM')).code, 0);
    await waitFor(() => disconnects === 1, { what: 'the client to see the connection close' });
    assert.equal(client.connected, false);

    // While the service is down, calls fail fast with ConnectFailed.
    const down = await outcome(client.request('echo', { message: 'down' }));
    assert.ok(down.error instanceof ConnectFailed, String(down.error));

    server = await startServer({ dir, udsPath });
    assert.deepEqual(await client.request('echo', { message: 'after' }), { message: 'after' });
    assert.equal(connects, 2);

    // Killed outright while a request is running: that request fails with
    // ConnectionLost (it may have run, so it is not resent), and after a
    // restart on the same path (the stale socket file is replaced) the next call works.
    const running = outcome(client.request('sleep', { seconds: 30 }));
    await waitFor(async () => (await client.request('echo', { message: 'ping' })).message === 'ping');
    await server.stop('SIGKILL');
    const lost = await running;
    assert.ok(lost.error instanceof ConnectionLost, String(lost.error));
    server = await startServer({ dir, udsPath });
    assert.deepEqual(await client.request('echo', { message: 'again' }), { message: 'again' });
    assert.equal(connects, 3);
  } finally {
    await client.close();
  }
});
