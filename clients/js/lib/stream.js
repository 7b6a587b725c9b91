// Newline-JSON over a stream socket (TCP or a Unix domain socket): the same
// behaviour as StreamClient in src/ecosys/transport/client.py.

import net from 'node:net';
import { performance } from 'node:perf_hooks';

import { checkDuration, checkHost, checkPort, Client, hostPort, resolveOptions } from './client.js';
import { BadResponse, ClientClosed, ConnectFailed, ConnectionLost } from './errors.js';
import { ResponseMatcher } from './matcher.js';
import { ACK, DEFAULT_MAX_MESSAGE_SIZE, HEARTBEAT_REQUEST, LineSplitter, ProtocolViolation, decodeResponse } from './protocol.js';

export const STREAM_DEFAULTS = Object.freeze({
  timeout: 10000,
  connectTimeout: 5000,
  retries: 2,
  retryDelay: 100,
  retryOnTimeout: false,
  maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE,
  persistent: true,
  heartbeatInterval: 5000,
  heartbeatTimeout: 5000,
});

/**
 * One open connection: writes requests, splits the incoming bytes into
 * lines, hands responses to callers by uid and answers to heartbeats.
 */
export class Connection {
  constructor(socket, maxMessageSize, onClose) {
    this.socket = socket;
    this.matcher = new ResponseMatcher();
    this.closed = false;
    this._splitter = new LineSplitter(maxMessageSize);
    this._onClose = onClose;
    this._error = null;
    this._heartbeat = null;
    this._done = new Promise((resolve) => socket.once('close', resolve));
    socket.on('data', (chunk) => this._received(chunk));
    socket.on('error', (err) => { this._error ??= err; });
    socket.on('end', () => this._lost(new ConnectionLost('the server closed the connection while a response was awaited')));
    socket.on('close', () => {
      const error = this._error;
      this._lost(error === null
        ? new ConnectionLost('connection closed while waiting for a response')
        : new ConnectionLost(`connection closed while waiting for a response: ${error.message}`, { cause: error }));
    });
  }

  /** True while the connection can carry requests. */
  get alive() {
    return !this.closed && !this.socket.destroyed && this.socket.writable;
  }

  /** Resolves once the socket is fully closed. */
  get done() {
    return this._done;
  }

  /** Write one request and wait for its response. Throws ConnectFailed if the connection is already gone. */
  request(uid, payload, timeout, closing = null) {
    if (!this.alive) {
      return Promise.reject(new ConnectFailed('connection closed before the request was sent'));
    }
    return this.matcher.wait(uid, (bytes) => this._write(bytes), payload, timeout, closing);
  }

  _write(bytes) {
    if (!this.alive) throw new ConnectFailed('connection closed before the request was sent');
    this.socket.write(bytes);
  }

  _received(chunk) {
    if (this.closed) return;
    const { lines, overflow } = this._splitter.feed(chunk);
    for (const line of lines) {
      this._line(line);
      if (this.closed) return;
    }
    if (overflow) {
      this.abort(new BadResponse(`response exceeds the maximum size of ${this._splitter.maxSize} bytes`));
    }
  }

  _line(line) {
    if (line.length === 1 && line[0] === ACK) {
      this._heartbeatAnswered();
      return;
    }
    let response;
    try {
      response = decodeResponse(line);
    } catch (err) {
      if (!(err instanceof ProtocolViolation)) throw err;
      this.abort(new BadResponse(`server sent an invalid response: ${err.message}`));
      return;
    }
    this.matcher.deliver(response);
  }

  /** Fail every waiting caller with `error` and drop the connection. */
  abort(error) {
    this._lost(error);
    this.socket.destroy();
  }

  /** Close the connection; callers still waiting fail with ClientClosed (not retried: they may have run). */
  close() {
    this.abort(new ClientClosed('the client was closed while waiting for a response'));
    return this._done;
  }

  _lost(error) {
    this.matcher.failAll(error);
    if (this.closed) return;
    this.closed = true;
    this._stopHeartbeat();
    this._onClose?.(error);
  }

  /**
   * Every `interval` ms write ENQ "\n"; if ACK does not come back within
   * `timeout` ms, drop the connection (waiting callers get ConnectionLost).
   * The timers do not keep the process alive on their own.
   */
  startHeartbeat(interval, timeout, onAnswer) {
    this._heartbeat = { interval, timeout, onAnswer, timer: null, sentAt: null };
    this._scheduleHeartbeat();
  }

  _scheduleHeartbeat() {
    const hb = this._heartbeat;
    if (hb === null || this.closed) return;
    hb.sentAt = null;
    hb.timer = setTimeout(() => this._sendHeartbeat(), hb.interval);
    hb.timer.unref();
  }

  _sendHeartbeat() {
    const hb = this._heartbeat;
    if (hb === null || !this.alive) return;
    hb.sentAt = performance.now();
    this.socket.write(HEARTBEAT_REQUEST);
    hb.timer = setTimeout(() => {
      this.abort(new ConnectionLost('heartbeat not answered; connection presumed dead'));
    }, hb.timeout);
    hb.timer.unref();
  }

  _heartbeatAnswered() {
    const hb = this._heartbeat;
    if (hb === null || hb.sentAt === null) return; // an ACK we did not ask for: ignore it
    clearTimeout(hb.timer);
    const rtt = performance.now() - hb.sentAt;
    this._scheduleHeartbeat();
    hb.onAnswer?.(rtt);
  }

  _stopHeartbeat() {
    if (this._heartbeat !== null) {
      clearTimeout(this._heartbeat.timer);
      this._heartbeat = null;
    }
  }
}

/**
 * Client over a stream socket; TcpClient and UdsClient say where to connect.
 *
 * persistent (default): one shared connection, opened on first use, carrying
 * every request at once (matched by uid), reopened on the next call after it
 * dropped, and checked by a heartbeat. persistent: false: a new connection
 * per request, closed after its response.
 *
 * Events: 'connect' (the shared connection opened), 'disconnect' (error: why
 * it closed), 'heartbeat' (round trip in ms).
 */
export class StreamClient extends Client {
  constructor(options) {
    super(options);
    this.persistent = Boolean(options.persistent);
    const interval = options.heartbeatInterval;
    this.heartbeatInterval = interval === null || interval === 0 || interval === false
      ? null : checkDuration('heartbeatInterval', interval);
    this.heartbeatTimeout = checkDuration('heartbeatTimeout', options.heartbeatTimeout);
    this._connection = null;
    this._connecting = null;
    this._transient = new Set();
    this._connects = new Set(); // connections being opened, for close() to wait for
  }

  /** True while the shared connection is open. */
  get connected() {
    return this._connection !== null && this._connection.alive;
  }

  _createSocket() {
    throw new Error('not implemented');
  }

  /**
   * Open a connection within connectTimeout, or reject with ConnectFailed;
   * with ClientClosed once `closing` is aborted (by close()).
   */
  _connect(onClose, closing) {
    const opening = new Promise((resolve, reject) => {
      const closed = () => new ClientClosed(`the client was closed while connecting to ${this.url}`);
      if (closing.aborted) {
        reject(closed());
        return;
      }
      let socket;
      try {
        socket = this._createSocket();
      } catch (err) {
        reject(new ConnectFailed(`cannot connect to ${this.url}: ${err.message}`, { cause: err }));
        return;
      }
      const finish = () => {
        clearTimeout(timer);
        socket.off('error', failed);
        socket.off('connect', connected);
        closing.removeEventListener('abort', aborted);
      };
      const giveUp = (error) => {
        finish();
        socket.on('error', () => {}); // nothing more to report from a socket given up on
        // Settle once the socket is fully closed, so a failed call leaves no handle behind.
        socket.once('close', () => reject(error));
        socket.destroy();
      };
      const failed = (err) => giveUp(new ConnectFailed(`cannot connect to ${this.url}: ${err.message}`, { cause: err }));
      const aborted = () => giveUp(closed());
      const connected = () => {
        finish();
        resolve(new Connection(socket, this.maxMessageSize, onClose));
      };
      const timer = setTimeout(
        () => failed(new Error(`timed out after ${this.connectTimeout} ms`)), this.connectTimeout,
      );
      socket.once('error', failed);
      socket.once('connect', connected);
      closing.addEventListener('abort', aborted, { once: true });
    });
    this._connects.add(opening);
    const forget = () => this._connects.delete(opening);
    opening.then(forget, forget);
    return opening;
  }

  _sharedConnection(closing) {
    const current = this._connection;
    if (current !== null && current.alive) return Promise.resolve(current);
    if (this._connecting === null) {
      let connection = null;
      const connecting = this._connect((error) => {
        if (this._connection === connection) this._connection = null;
        this.emit('disconnect', error);
      }, closing);
      const shared = connecting.then((opened) => {
        connection = opened;
        this._connection = opened;
        if (this.heartbeatInterval !== null) {
          opened.startHeartbeat(this.heartbeatInterval, this.heartbeatTimeout, (rtt) => this.emit('heartbeat', rtt));
        }
        this.emit('connect');
        return opened;
      }).finally(() => {
        // close() may have let go of this attempt, and a new one begun since.
        if (this._connecting === shared) this._connecting = null;
      });
      this._connecting = shared;
    }
    return this._connecting;
  }

  async _exchange(uid, payload, timeout, closing) {
    if (this.persistent) {
      let connection = this._connection;
      if (connection === null || !connection.alive) {
        connection = await this._sharedConnection(closing);
        // close() came after the connection opened but before this request resumed.
        if (closing.aborted) throw new ClientClosed(`the client was closed while connecting to ${this.url}`);
      }
      return connection.request(uid, payload, timeout, closing);
    }
    const connection = await this._connect(null, closing);
    this._transient.add(connection);
    try {
      return await connection.request(uid, payload, timeout, closing);
    } finally {
      this._transient.delete(connection);
      await connection.close();
    }
  }

  /**
   * Close the shared connection (and any per-request ones) and stop the
   * heartbeat. Requests made before, still connecting or waiting, fail with
   * ClientClosed and are not written. The client can be used again: it reconnects.
   */
  async close() {
    // Aborts the connects in progress; waiting for them only lets their sockets finish closing.
    this._endRequests();
    this._connecting = null;
    const closing = [...this._connects].map((opening) => opening.catch(() => {}));
    closing.push(...[...this._transient].map((connection) => connection.close()));
    const connection = this._connection;
    this._connection = null;
    if (connection !== null) closing.push(connection.close());
    await Promise.all(closing);
  }
}

/** Client for an ecosys service on TCP. */
export class TcpClient extends StreamClient {
  constructor(options = {}) {
    const merged = resolveOptions('TcpClient', options, STREAM_DEFAULTS, ['host', 'port']);
    super(merged);
    this.host = checkHost(merged.host);
    this.port = checkPort(merged.port);
  }

  get url() {
    return `tcp://${hostPort(this.host, this.port)}`;
  }

  _createSocket() {
    const socket = net.createConnection({ host: this.host, port: this.port });
    socket.setNoDelay(true);
    return socket;
  }
}

/** Client for an ecosys service on a Unix domain socket. */
export class UdsClient extends StreamClient {
  constructor(options = {}) {
    const merged = resolveOptions('UdsClient', options, STREAM_DEFAULTS, ['path']);
    super(merged);
    if (typeof merged.path !== 'string' || merged.path === '') {
      throw new TypeError(`path must be a non-empty string, got ${String(merged.path)}`);
    }
    this.path = merged.path;
  }

  get url() {
    return `uds://${this.path}`;
  }

  _createSocket() {
    return net.createConnection({ path: this.path });
  }
}
