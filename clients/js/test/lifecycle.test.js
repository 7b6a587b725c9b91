// close() leaves nothing open: a process that used every kind of client and
// closed them exits on its own.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';

import { deadTcpPort, startServer } from '../test-support/harness.js';

const CHILD = join(dirname(fileURLToPath(import.meta.url)), '..', 'test-support', 'exit-child.js');
const EXIT_TIMEOUT = 20000;

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.cleanup(); });

const count = (list, name) => list.filter((item) => item === name).length;

test('after close() the process exits on its own', { timeout: 60000 }, async () => {
  const addresses = {
    tcp: { host: server.tcp.host, port: server.tcp.port },
    udp: { host: server.udp.host, port: server.udp.port },
    uds: server.uds,
    deadPort: await deadTcpPort(),
  };
  const child = spawn(process.execPath, [CHILD, JSON.stringify(addresses)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text) => { stdout += text; });
  child.stderr.setEncoding('utf8').on('data', (text) => { stderr += text; });
  const exit = await new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve({ code: null, timedOut: true });
    }, EXIT_TIMEOUT);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, timedOut: false });
    });
  });
  assert.equal(exit.timedOut, false, `the process did not exit within ${EXIT_TIMEOUT} ms\nstdout: ${stdout}\nstderr: ${stderr}`);
  assert.equal(exit.code, 0, `stdout: ${stdout}\nstderr: ${stderr}`);
  const { before: open, after: closed } = JSON.parse(stdout.trim().split('\n').pop());
  // Before close(): the persistent TCP connection and the UDP socket were open (and keeping the process alive).
  assert.ok(count(open, 'TCPSocketWrap') >= 1, JSON.stringify(open));
  assert.ok(count(open, 'UDPWrap') >= 1, JSON.stringify(open));
  assert.ok(count(open, 'PipeWrap') > count(closed, 'PipeWrap'), `the UDS connection: ${JSON.stringify({ open, closed })}`);
  // After: no client socket and no timer.
  for (const kind of ['TCPSocketWrap', 'UDPWrap', 'Timeout', 'TCPWrap']) {
    assert.equal(count(closed, kind), 0, `${kind} left open: ${JSON.stringify(closed)}`);
  }
});
