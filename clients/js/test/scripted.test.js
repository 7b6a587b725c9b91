// The stream client against scripted servers that misbehave on purpose:
// odd chunking, silence, garbage, early closes. (The real service never
// does these on demand; the other test files use it.)

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  BadResponse, ConnectionLost, ProtocolErrorResponse, RequestTimeout, TcpClient, newUid,
} from '../index.js';
import { fakeServer, outcome, waitFor } from '../test-support/harness.js';

const answer = (uid, data, status = 0) => `${JSON.stringify({ uid, status, data })}\n`;

async function withServer(onConnection, options, body) {
  const server = await fakeServer(onConnection);
  const client = new TcpClient({ host: '127.0.0.1', port: server.port, heartbeatInterval: 0, ...options });
  try {
    await body(client, server);
  } finally {
    await client.close();
    await server.close();
  }
}

/** Answers every request with its data, and every heartbeat, using `write` to send the bytes. */
function echoing(write) {
  return async (socket, lines) => {
    for await (const line of lines) {
      if (line.length === 1 && line[0] === 0x05) {
        write(socket, '\x06\n');
        continue;
      }
      const { uid, data } = JSON.parse(line);
      write(socket, answer(uid, data));
    }
  };
}

describe('framing', { timeout: 30000 }, () => {
  test('responses split into single bytes', async () => {
    const byteByByte = (socket, text) => {
      for (const byte of Buffer.from(text)) socket.write(Buffer.from([byte]));
    };
    await withServer(echoing(byteByByte), {}, async (client) => {
      const results = await Promise.all([1, 2, 3].map((n) => client.request('x', { n, text: 'é✓'.repeat(n) })));
      assert.deepEqual(results.map((r) => r.n), [1, 2, 3]);
      assert.equal(results[2].text, 'é✓é✓é✓'); // multi-byte characters cut between chunks survive
    });
  });

  test('many responses in one chunk, in reverse order, with heartbeat replies between them', async () => {
    const batch = async (socket, lines) => {
      const pending = [];
      for await (const line of lines) {
        pending.push(JSON.parse(line));
        if (pending.length === 50) {
          socket.write(pending.reverse().map((r) => `\x06\n${answer(r.uid, r.data)}`).join(''));
          pending.length = 0;
        }
      }
    };
    await withServer(batch, {}, async (client) => {
      const results = await Promise.all(Array.from({ length: 100 }, (_, i) => client.request('x', i)));
      assert.deepEqual(results, Array.from({ length: 100 }, (_, i) => i));
    });
  });

  test('a response that is not JSON: BadResponse, the connection is dropped, the next call reconnects', async () => {
    let connection = 0;
    const server = async (socket, lines) => {
      connection += 1;
      for await (const line of lines) {
        const { uid, data } = JSON.parse(line);
        socket.write(connection === 1 ? 'this is not json\n' : answer(uid, data));
      }
    };
    await withServer(server, {}, async (client, fake) => {
      const bad = await outcome(client.request('x', 1));
      assert.ok(bad.error instanceof BadResponse, String(bad.error));
      assert.match(bad.error.message, /invalid response/);
      assert.equal(await client.request('x', 2), 2);
      assert.equal(fake.connections, 2);
    });
  });

  test('a response line that never ends is cut off at maxMessageSize', async () => {
    const endless = async (socket, lines) => {
      for await (const _ of lines) socket.write('{"uid":"' + 'x'.repeat(5000)); // no newline, ever
    };
    await withServer(endless, { maxMessageSize: 1024 }, async (client) => {
      const result = await outcome(client.request('x', 1, { timeout: 5000 }));
      assert.ok(result.error instanceof BadResponse, String(result.error));
      assert.ok(result.ms < 4000, `noticed before the newline: ${result.ms} ms`);
    });
  });
});

describe('matching', { timeout: 30000 }, () => {
  test('an error with a null uid goes to the only request in flight', async () => {
    const refuse = async (socket, lines) => {
      for await (const _ of lines) socket.write(answer(null, { message: 'message is not a JSON object', details: null }, 100));
    };
    await withServer(refuse, {}, async (client) => {
      const err = await client.request('x').catch((e) => e);
      assert.ok(err instanceof ProtocolErrorResponse, String(err));
      assert.equal(err.uid, null);
    });
  });

  test('answers for uids nobody waits for are dropped', async () => {
    const noisy = async (socket, lines) => {
      for await (const line of lines) {
        const { uid, data } = JSON.parse(line);
        socket.write(answer(newUid(), 'stray') + answer(newUid(), { message: 'stray error', details: null }, 600) + answer(uid, data));
      }
    };
    await withServer(noisy, {}, async (client) => {
      assert.equal(await client.request('x', 'mine'), 'mine');
      assert.equal(await client.request('x', 'mine too'), 'mine too');
    });
  });

  test('a late answer inside the timeout window is swallowed; the retry with the same uid gets its own', async () => {
    // The first request (timeout 100 ms) is answered at 150 ms, inside the window
    // during which its uid stays reserved; the second is answered at once. Were
    // the second (same uid) sent right after the timeout, its own quick answer
    // would be taken for the late one and swallowed, and the first's late
    // answer handed to it.
    let count = 0;
    const slowFirst = async (socket, lines) => {
      for await (const line of lines) {
        const { uid, data } = JSON.parse(line);
        count += 1;
        const delay = count === 1 ? 150 : 0;
        setTimeout(() => socket.write(answer(uid, data)), delay);
      }
    };
    await withServer(slowFirst, {}, async (client) => {
      const uid = newUid();
      const first = await outcome(client.request('x', 'first', { uid, timeout: 100 }));
      assert.ok(first.error instanceof RequestTimeout);
      assert.equal(await client.request('x', 'second', { uid }), 'second');
      assert.equal(count, 2);
    });
  });
});

describe('dead connections', { timeout: 30000 }, () => {
  test('an unanswered heartbeat drops the connection: ConnectionLost for requests in flight', async () => {
    const silent = async (_socket, lines) => {
      for await (const _ of lines) { /* reads everything, answers nothing */ }
    };
    await withServer(silent, { heartbeatInterval: 50, heartbeatTimeout: 100, timeout: 10000 }, async (client, fake) => {
      const result = await outcome(client.request('x', 1));
      assert.ok(result.error instanceof ConnectionLost, String(result.error));
      assert.match(result.error.message, /heartbeat not answered/);
      assert.ok(result.ms < 5000, `found within interval + timeout: ${result.ms} ms`);
      assert.equal(fake.connections, 1); // not resent: the server may have run it
    });
  });

  test('the server closes the connection before answering: ConnectionLost, not retried', async () => {
    const rude = async (socket, lines) => {
      for await (const _ of lines) socket.end();
    };
    await withServer(rude, { retries: 3 }, async (client, fake) => {
      const result = await outcome(client.request('x', 1));
      assert.ok(result.error instanceof ConnectionLost, String(result.error));
      assert.equal(fake.connections, 1);
    });
  });

  test('an idle connection the server closed is replaced on the next call', async () => {
    let connection = 0;
    const closesFirst = async (socket, lines) => {
      connection += 1;
      const mine = connection;
      for await (const line of lines) {
        const { uid, data } = JSON.parse(line);
        socket.write(answer(uid, data));
        if (mine === 1) socket.end();
      }
    };
    await withServer(closesFirst, {}, async (client, fake) => {
      let disconnects = 0;
      client.on('disconnect', () => { disconnects += 1; });
      assert.equal(await client.request('x', 'one'), 'one');
      await waitFor(() => disconnects === 1, { what: 'the close to be noticed' });
      assert.equal(await client.request('x', 'two'), 'two');
      assert.equal(fake.connections, 2);
    });
  });

  test('heartbeats are answered while the server is slow to answer requests', async () => {
    const slowButAlive = async (socket, lines) => {
      for await (const line of lines) {
        if (line.length === 1 && line[0] === 0x05) {
          socket.write('\x06\n');
          continue;
        }
        const { uid, data } = JSON.parse(line);
        setTimeout(() => socket.write(answer(uid, data)), 400);
      }
    };
    await withServer(slowButAlive, { heartbeatInterval: 30, heartbeatTimeout: 2000 }, async (client) => {
      let beats = 0;
      client.on('heartbeat', (rtt) => { beats += 1; assert.ok(rtt >= 0); });
      assert.equal(await client.request('x', 'slow'), 'slow');
      assert.ok(beats >= 3, `heartbeats kept going during the request: ${beats}`);
    });
  });
});
