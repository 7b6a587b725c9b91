// Test helpers: start the real ecosys service (test/server.py) as a child
// process and read its addresses from the start-up banner, scripted fake
// servers, and waiting for conditions. Kept outside test/ because Node's test
// runner treats every .js file under a test/ directory as a test file.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
export const SERVER_SCRIPT = join(HERE, '..', 'test', 'server.py');
export const PYTHON = process.env.ECOSYS_PYTHON || 'python3';
const START_TIMEOUT = 30000;
const STOP_TIMEOUT = 15000;

const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** A fresh temporary directory (short, so a socket path in it fits the ~108-byte limit). */
export function tempDir() {
  return mkdtempSync(join(tmpdir(), 'ecojs-'));
}

/**
 * Parse the banner `<name> instance <i> listening on tcp://h:p, udp://h:p, uds:///path; log <file>`
 * into { tcp: {host, port}, udp: {host, port}, uds: path, urls }.
 */
export function parseBanner(line) {
  const match = / listening on (.*); log /.exec(line);
  if (match === null) return null;
  const urls = match[1].split(', ');
  const found = { urls };
  for (const url of urls) {
    const hostPort = /^(tcp|udp):\/\/(.*):([0-9]+)$/.exec(url);
    if (hostPort !== null) {
      found[hostPort[1]] = { host: hostPort[2].replace(/^\[|\]$/g, ''), port: Number(hostPort[3]), url };
    } else if (url.startsWith('uds://')) {
      found.uds = url.slice('uds://'.length);
    }
  }
  return found;
}

/**
 * Start test/server.py on TCP and UDP (free ports) and a UDS path, and
 * resolve once its banner is printed. `dir` is its ECOENV_DEFAULT_DIR (a new
 * temporary directory unless given); the UDS path is `<dir>/s.sock` unless
 * `udsPath` says otherwise.
 */
export function startServer({ dir = tempDir(), udsPath = join(dir, 's.sock'), tcp = '127.0.0.1:0', udp = '127.0.0.1:0' } = {}) {
  const args = [SERVER_SCRIPT, '-i', 'jstest', '--tcp', tcp, '--udp', udp, '--uds', udsPath];
  const child = spawn(PYTHON, args, {
    env: { ...process.env, ECOENV_DEFAULT_DIR: dir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    running.delete(child);
    resolve({ code, signal });
  }));
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text) => { stderr += text; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server did not start within ${START_TIMEOUT} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, START_TIMEOUT);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${PYTHON} (set ECOSYS_PYTHON): ${err.message}`));
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`server exited (code ${code}, signal ${signal}) before its banner\nstdout: ${stdout}\nstderr: ${stderr}`));
    });
    child.stdout.setEncoding('utf8').on('data', (text) => {
      const before = stdout;
      stdout += text;
      if (before.includes('\n')) return; // the banner was the first line
      const newline = stdout.indexOf('\n');
      if (newline < 0) return;
      const addresses = parseBanner(stdout.slice(0, newline));
      clearTimeout(timer);
      if (addresses === null) {
        child.kill('SIGKILL');
        reject(new Error(`unexpected first line from the server: ${stdout.slice(0, newline)}\nstderr: ${stderr}`));
        return;
      }
      resolve({
        ...addresses,
        dir,
        child,
        exited,
        output: () => ({ stdout, stderr }),
        /** SIGTERM (or `signal`), then wait for the exit; SIGKILL if it takes too long. */
        async stop(signal = 'SIGTERM') {
          if (child.exitCode === null && child.signalCode === null) child.kill(signal);
          const timeout = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT);
          const result = await exited;
          clearTimeout(timeout);
          return result;
        },
        /** Stop the server and remove its directory. */
        async cleanup() {
          await this.stop();
          rmSync(dir, { recursive: true, force: true });
        },
      });
    });
  });
}

/** A TCP port on 127.0.0.1 where nobody listens (it was free a moment ago). */
export async function deadTcpPort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * A scripted TCP server on 127.0.0.1: `onConnection(socket, lines)` is called
 * for each connection; `lines` is an async iterator over the request lines
 * (Buffers without "\n"). Resolves with { port, connections, close() }.
 */
export async function fakeServer(onConnection) {
  const sockets = new Set();
  let connections = 0;
  const server = net.createServer((socket) => {
    connections += 1;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    onConnection(socket, readLines(socket));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    get connections() { return connections; },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

async function* readLines(socket) {
  let buffered = Buffer.alloc(0);
  try {
    for await (const chunk of socket) {
      buffered = Buffer.concat([buffered, chunk]);
      let newline;
      while ((newline = buffered.indexOf(0x0a)) >= 0) {
        yield buffered.subarray(0, newline);
        buffered = buffered.subarray(newline + 1);
      }
    }
  } catch {
    // the client reset the connection: no more lines
  }
}

/** Resolve once `condition()` is truthy; reject after `timeout` ms. */
export async function waitFor(condition, { timeout = 10000, interval = 10, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

/** Settle `promise` and report how: { value } or { error }, with the time it took in ms. */
export async function outcome(promise) {
  const started = performance.now();
  try {
    return { value: await promise, ms: performance.now() - started };
  } catch (error) {
    return { error, ms: performance.now() - started };
  }
}
