// TcpClient and UdsClient against a real ecosys service (test/server.py).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  ApplicationBusy, BadResponse, ClientDenied, ConnectFailed, ProcessingFailed, ProtocolErrorResponse,
  RequestTimeout, ResponseError, TcpClient, TransportError, UdsClient, UnknownError, UnknownRoute,
  ValidationFailed, clientFromUrl, isValidUid, newUid,
} from '../index.js';
import { deadTcpPort, outcome, startServer, waitFor } from '../test-support/harness.js';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.cleanup(); });

/** Count the client's connection events. */
function watch(client) {
  const seen = { connect: 0, disconnect: 0, heartbeat: 0, reasons: [] };
  client.on('connect', () => { seen.connect += 1; });
  client.on('disconnect', (error) => { seen.disconnect += 1; seen.reasons.push(error); });
  client.on('heartbeat', () => { seen.heartbeat += 1; });
  return seen;
}

const transports = {
  tcp: (options = {}) => new TcpClient({ host: server.tcp.host, port: server.tcp.port, ...options }),
  uds: (options = {}) => new UdsClient({ path: server.uds, ...options }),
};

for (const [name, make] of Object.entries(transports)) {
  describe(`${name} client`, { timeout: 60000 }, () => {
    test('echo', async () => {
      const client = make();
      try {
        assert.deepEqual(await client.request('echo', { message: 'hi' }), { message: 'hi' });
        assert.deepEqual(await client.request('echo', { message: 'ünïcødé ✓ \n "quoted"' }), { message: 'ünïcødé ✓ \n "quoted"' });
        const reply = await client.send('echo', { message: 'envelope' });
        assert.equal(reply.status, 0);
        assert.equal(reply.ok, true);
        assert.ok(isValidUid(reply.uid));
        assert.deepEqual(reply.data, { message: 'envelope' });
        assert.equal(client.connected, true);
      } finally {
        await client.close();
      }
      assert.equal(client.connected, false);
    });

    test('clientFromUrl builds a working client', async () => {
      const url = name === 'tcp' ? server.tcp.url : `uds://${server.uds}`;
      const client = clientFromUrl(url, { timeout: 5000 });
      try {
        assert.equal(client.url, url);
        assert.deepEqual(await client.request('echo', { message: 'url' }), { message: 'url' });
      } finally {
        await client.close();
      }
    });

    test('status 300 with details: ValidationFailed', async () => {
      const client = make();
      try {
        const uid = newUid();
        const err = await client.request('echo', { message: 42 }, { uid }).catch((e) => e);
        assert.ok(err instanceof ValidationFailed, String(err));
        assert.ok(err instanceof ResponseError);
        assert.equal(err.status, 300);
        assert.equal(err.message, "request data does not fit 'echo'");
        assert.deepEqual(err.details, [{ loc: ['message'], msg: 'Input should be a valid string', type: 'string_type' }]);
        assert.equal(err.uid, uid);
        const missing = await client.request('echo').catch((e) => e);
        assert.ok(missing instanceof ValidationFailed);
        assert.equal(missing.details[0].type, 'missing');
        // send() hands back the envelope instead of throwing.
        const reply = await client.send('echo', { message: 42 });
        assert.equal(reply.status, 300);
        assert.equal(reply.ok, false);
        assert.equal(reply.data.message, "request data does not fit 'echo'");
      } finally {
        await client.close();
      }
    });

    test('unknown route: UnknownRoute', async () => {
      const client = make();
      try {
        const err = await client.request('no.such.route').catch((e) => e);
        assert.ok(err instanceof UnknownRoute, String(err));
        assert.equal(err.status, 400);
        assert.equal(err.message, "unknown route key: 'no.such.route'");
        assert.deepEqual(err.details, { route_key: 'no.such.route' });
      } finally {
        await client.close();
      }
    });

    test('a handler that raises: ProcessingFailed, and the service keeps serving', async () => {
      const client = make();
      const seen = watch(client);
      try {
        for (let i = 0; i < 3; i += 1) {
          const err = await client.request('boom').catch((e) => e);
          assert.ok(err instanceof ProcessingFailed, String(err));
          assert.equal(err.status, 600);
          assert.equal(err.message, 'RuntimeError: kaboom');
          assert.deepEqual(err.details, { exception: 'RuntimeError' });
          assert.deepEqual(await client.request('echo', { message: `after ${i}` }), { message: `after ${i}` });
        }
        assert.equal(seen.connect, 1); // an error status does not touch the connection
      } finally {
        await client.close();
      }
    });

    test('every status maps to its error class', async () => {
      const client = make();
      try {
        const cases = [[100, ProtocolErrorResponse], [200, ClientDenied], [300, ValidationFailed],
          [400, UnknownRoute], [500, ApplicationBusy], [600, ProcessingFailed], [999, UnknownError], [777, UnknownError]];
        await Promise.all(cases.map(async ([status, cls]) => {
          const err = await client.request('reject', { status, message: `no ${status}`, details: { status } }).catch((e) => e);
          assert.ok(err instanceof cls, `${status}: ${err}`);
          assert.equal(err.status, status);
          assert.equal(err.message, `no ${status}`);
          assert.deepEqual(err.details, { status });
        }));
      } finally {
        await client.close();
      }
    });

    test('200 concurrent requests on one connection, answered out of order, all matched', async () => {
      const client = make();
      const seen = watch(client);
      try {
        const calls = Array.from({ length: 200 }, (_, i) => (i % 4 === 0
          ? client.request('sleep', { seconds: ((i * 7) % 50) / 1000, tag: `t${i}` }).then((r) => r.tag)
          : client.request('echo', { message: `m${i}` }).then((r) => r.message)));
        const results = await Promise.all(calls);
        results.forEach((result, i) => assert.equal(result, i % 4 === 0 ? `t${i}` : `m${i}`));
        assert.equal(seen.connect, 1);
        assert.equal(seen.disconnect, 0);
      } finally {
        await client.close();
      }
    });

    test('timeout: RequestTimeout, and the next request works on the same connection', async () => {
      const client = make();
      const seen = watch(client);
      try {
        const slow = await outcome(client.request('sleep', { seconds: 1.5 }, { timeout: 100 }));
        assert.ok(slow.error instanceof RequestTimeout, String(slow.error));
        assert.ok(slow.error instanceof TransportError);
        assert.ok(slow.ms >= 90 && slow.ms < 1400, `took ${slow.ms} ms`);
        assert.deepEqual(await client.request('echo', { message: 'still here' }), { message: 'still here' });
        assert.equal(seen.connect, 1);
      } finally {
        await client.close();
      }
    });

    test('an explicit uid is sent, echoed and seen by the handler', async () => {
      const client = make();
      try {
        const uid = newUid();
        assert.equal(await client.request('whoami', null, { uid }), uid);
        const reply = await client.send('echo', { message: 'x' }, { uid });
        assert.equal(reply.uid, uid);
        const upper = newUid().toUpperCase(); // echoed exactly as sent
        assert.equal((await client.send('whoami', null, { uid: upper })).data, upper);
        const fresh = await client.send('whoami');
        assert.equal(fresh.data, fresh.uid); // without one, the client makes a fresh uid
        assert.notEqual(fresh.uid, uid);
      } finally {
        await client.close();
      }
    });

    test('an invalid uid is refused before anything is sent', async () => {
      const client = make();
      const seen = watch(client);
      try {
        for (const uid of ['abc', '{0f8fad5b-d9cb-469f-a165-70867728950e}', '0f8fad5bd9cb469fa16570867728950e', 12]) {
          await assert.rejects(client.request('whoami', null, { uid }), TypeError);
        }
        assert.equal(seen.connect, 0);
      } finally {
        await client.close();
      }
    });

    test('requests with the same uid wait for each other', async () => {
      const client = make();
      try {
        const uid = newUid();
        const order = [];
        const slow = client.request('sleep', { seconds: 0.3, tag: 'slow' }, { uid }).then((r) => { order.push('slow'); return r; });
        const quick = client.request('whoami', null, { uid }).then((r) => { order.push('quick'); return r; });
        const other = client.request('echo', { message: 'other' }).then((r) => { order.push('other'); return r; });
        const [slowResult, quickResult, otherResult] = await Promise.all([slow, quick, other]);
        assert.deepEqual(slowResult, { slept: 0.3, tag: 'slow' });
        assert.equal(quickResult, uid); // had both been in flight at once, the quick answer would have gone to "slow"
        assert.deepEqual(otherResult, { message: 'other' });
        assert.deepEqual(order, ['other', 'slow', 'quick']); // other uids are not held up
      } finally {
        await client.close();
      }
    });

    test('the late answer of a timed-out request is not given to a later request with its uid', async () => {
      const client = make();
      try {
        const uid = newUid();
        // Times out at 250 ms; the uid stays reserved for as long again (until
        // 500 ms); the late answer comes at about 375 ms, inside that window.
        const first = await outcome(client.request('sleep', { seconds: 0.375, tag: 'first' }, { uid, timeout: 250 }));
        assert.ok(first.error instanceof RequestTimeout);
        // Sent at once, this request would be answered by the first one's late answer (tag "first").
        const second = await client.request('sleep', { seconds: 0.05, tag: 'second' }, { uid, timeout: 5000 });
        assert.equal(second.tag, 'second');
      } finally {
        await client.close();
      }
    });

    test('persistent: false opens a connection per request', async () => {
      const client = make({ persistent: false });
      const seen = watch(client);
      try {
        const results = await Promise.all(Array.from({ length: 20 }, (_, i) => client.request('echo', { message: `p${i}` })));
        results.forEach((r, i) => assert.equal(r.message, `p${i}`));
        const err = await client.request('boom').catch((e) => e);
        assert.ok(err instanceof ProcessingFailed);
        const slow = await outcome(client.request('sleep', { seconds: 1 }, { timeout: 100 }));
        assert.ok(slow.error instanceof RequestTimeout);
        assert.deepEqual(await client.request('echo', { message: 'again' }), { message: 'again' });
        assert.equal(seen.connect, 0); // no shared connection
        assert.equal(client.connected, false);
      } finally {
        await client.close();
      }
    });

    test('a response longer than maxMessageSize: BadResponse, then the client reconnects', async () => {
      const client = make({ maxMessageSize: 2000 });
      const seen = watch(client);
      try {
        const waiting = outcome(client.request('sleep', { seconds: 1, tag: 'bystander' }));
        const big = await outcome(client.request('big', { size: 5000 }));
        assert.ok(big.error instanceof BadResponse, String(big.error));
        assert.match(big.error.message, /exceeds the maximum size of 2000 bytes/);
        const bystander = await waiting; // the connection is dropped, so everyone waiting on it fails
        assert.ok(bystander.error instanceof BadResponse, String(bystander.error));
        assert.equal((await client.request('big', { size: 1900 })).length, 1900);
        assert.equal(seen.connect, 2);
        assert.equal(seen.disconnect, 1);
      } finally {
        await client.close();
      }
    });

    test('heartbeats keep a quiet connection checked and open', async () => {
      const client = make({ heartbeatInterval: 20, heartbeatTimeout: 2000 });
      const seen = watch(client);
      try {
        await client.request('echo', { message: 'start' });
        await waitFor(() => seen.heartbeat >= 5, { what: '5 heartbeat answers' });
        assert.deepEqual(await client.request('echo', { message: 'between beats' }), { message: 'between beats' });
        await waitFor(() => seen.heartbeat >= 10, { what: '10 heartbeat answers' });
        assert.equal(seen.connect, 1);
        assert.equal(seen.disconnect, 0);
      } finally {
        await client.close();
      }
    });

    test('a closed client can be used again', async () => {
      const client = make();
      const seen = watch(client);
      try {
        assert.deepEqual(await client.request('echo', { message: 'one' }), { message: 'one' });
        await client.close();
        await client.close(); // twice is fine
        assert.deepEqual(await client.request('echo', { message: 'two' }), { message: 'two' });
        assert.equal(seen.connect, 2);
      } finally {
        await client.close();
      }
    });
  });
}

describe('connect failures', { timeout: 30000 }, () => {
  test('nobody listening on a TCP port: ConnectFailed after the retries', async () => {
    const port = await deadTcpPort();
    const client = new TcpClient({ host: '127.0.0.1', port, retries: 2, retryDelay: 50 });
    try {
      const result = await outcome(client.request('echo', { message: 'x' }));
      assert.ok(result.error instanceof ConnectFailed, String(result.error));
      assert.match(result.error.message, /cannot connect to tcp:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/);
      assert.equal(result.error.cause.code, 'ECONNREFUSED');
      assert.ok(result.ms >= 140, `retried with 50 + 100 ms pauses, took ${result.ms} ms`);
      const once = await outcome(new TcpClient({ host: '127.0.0.1', port, retries: 0, retryDelay: 1000 }).request('echo'));
      assert.ok(once.error instanceof ConnectFailed);
      assert.ok(once.ms < 900, `no retry, no pause: took ${once.ms} ms`);
    } finally {
      await client.close();
    }
  });

  test('no socket file: ConnectFailed', async () => {
    const client = new UdsClient({ path: `${server.dir}/missing.sock`, retries: 1, retryDelay: 10 });
    const err = await client.request('echo').catch((e) => e);
    assert.ok(err instanceof ConnectFailed, String(err));
    assert.equal(err.cause.code, 'ENOENT');
    await client.close();
  });
});
