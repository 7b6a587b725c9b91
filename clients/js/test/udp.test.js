// UdpClient against a real ecosys service (test/server.py).

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, before, describe, test } from 'node:test';

import {
  ClientClosed, ConnectFailed, ProcessingFailed, RequestTimeout, TransportError, UdpClient, UnknownRoute,
  ValidationFailed, clientFromUrl, newUid,
} from '../index.js';
import { outcome, startServer } from '../test-support/harness.js';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.cleanup(); });

const make = (options = {}) => new UdpClient({ host: server.udp.host, port: server.udp.port, ...options });

/** A UDP port on 127.0.0.1 where nobody listens (it was free a moment ago). */
async function deadUdpPort() {
  const socket = dgram.createSocket('udp4');
  await new Promise((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const { port } = socket.address();
  await new Promise((resolve) => socket.close(resolve));
  return port;
}

describe('udp client', { timeout: 60000 }, () => {
  test('echo, also through clientFromUrl', async () => {
    const client = make();
    const fromUrl = clientFromUrl(server.udp.url);
    try {
      assert.deepEqual(await client.request('echo', { message: 'hi' }), { message: 'hi' });
      assert.deepEqual(await fromUrl.request('echo', { message: 'url' }), { message: 'url' });
      const reply = await client.send('echo', { message: 'envelope' });
      assert.equal(reply.ok, true);
      assert.deepEqual(reply.data, { message: 'envelope' });
    } finally {
      await client.close();
      await fromUrl.close();
    }
  });

  test('error statuses', async () => {
    const client = make();
    try {
      const invalid = await client.request('echo', { message: 42 }).catch((e) => e);
      assert.ok(invalid instanceof ValidationFailed, String(invalid));
      assert.equal(invalid.details[0].type, 'string_type');
      assert.ok(await client.request('nope').catch((e) => e) instanceof UnknownRoute);
      assert.ok(await client.request('boom').catch((e) => e) instanceof ProcessingFailed);
      assert.deepEqual(await client.request('echo', { message: 'after' }), { message: 'after' });
    } finally {
      await client.close();
    }
  });

  test('100 concurrent requests on one socket, all matched', async () => {
    const client = make({ timeout: 5000 });
    try {
      const results = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 3 === 0
        ? client.request('sleep', { seconds: (i % 20) / 1000, tag: `t${i}` }).then((r) => r.tag)
        : client.request('echo', { message: `m${i}` }).then((r) => r.message))));
      results.forEach((result, i) => assert.equal(result, i % 3 === 0 ? `t${i}` : `m${i}`));
    } finally {
      await client.close();
    }
  });

  test('an explicit uid is echoed and seen by the handler', async () => {
    const client = make();
    try {
      const uid = newUid();
      assert.equal(await client.request('whoami', null, { uid }), uid);
      await assert.rejects(client.request('whoami', null, { uid: 'nope' }), TypeError);
    } finally {
      await client.close();
    }
  });

  test('timeout without retries: RequestTimeout, then the next request works', async () => {
    const client = make({ retryOnTimeout: false });
    try {
      const slow = await outcome(client.request('sleep', { seconds: 1 }, { timeout: 100 }));
      assert.ok(slow.error instanceof RequestTimeout, String(slow.error));
      assert.ok(slow.ms < 900, `one attempt only, took ${slow.ms} ms`);
      assert.deepEqual(await client.request('echo', { message: 'next' }), { message: 'next' });
    } finally {
      await client.close();
    }
  });

  test('a response too large for a datagram: ProcessingFailed from the server', async () => {
    const client = make();
    try {
      const err = await client.request('big', { size: 70000 }).catch((e) => e);
      assert.ok(err instanceof ProcessingFailed, String(err));
      assert.match(err.message, /too large for UDP/);
      assert.equal((await client.request('big', { size: 60000 })).length, 60000);
    } finally {
      await client.close();
    }
  });

  test('a request too large for a datagram is refused before sending', async () => {
    const client = make();
    const err = await client.request('echo', { message: 'x'.repeat(70000) }).catch((e) => e);
    assert.ok(err instanceof TransportError, String(err));
    assert.match(err.message, /exceeds the maximum message size of 65506/);
    await client.close();
  });

  test('nobody listening: ConnectFailed (ICMP port unreachable)', async () => {
    const port = await deadUdpPort();
    const client = new UdpClient({ host: '127.0.0.1', port, retries: 1, retryDelay: 10, timeout: 3000 });
    try {
      const result = await outcome(client.request('echo', { message: 'x' }));
      assert.ok(result.error instanceof ConnectFailed, String(result.error));
      assert.match(result.error.message, /UDP peer unreachable/);
      assert.ok(result.ms < 2500, `reported at once rather than timing out: ${result.ms} ms`);
    } finally {
      await client.close();
    }
  });

  test('close() fails requests still waiting, and the client can be used again', async () => {
    const client = make({ retryOnTimeout: false });
    const waiting = outcome(client.request('sleep', { seconds: 1 }));
    await new Promise((resolve) => setTimeout(resolve, 50));
    await client.close();
    const result = await waiting;
    assert.ok(result.error instanceof ClientClosed, String(result.error));
    assert.deepEqual(await client.request('echo', { message: 'reopened' }), { message: 'reopened' });
    await client.close();
  });
});
