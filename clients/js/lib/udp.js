// One request per datagram, matched by uid: the same behaviour as UdpClient
// in src/ecosys/transport/udp.py.

import dgram from 'node:dgram';
import { isIP } from 'node:net';

import { checkHost, checkPort, Client, hostPort, resolveOptions } from './client.js';
import { ClientClosed, ConnectFailed, ConnectionLost } from './errors.js';
import { ResponseMatcher } from './matcher.js';
import { ACK, MAX_DATAGRAM, ProtocolViolation, decodeResponse } from './protocol.js';

export const UDP_DEFAULTS = Object.freeze({
  timeout: 2000,
  connectTimeout: 5000,
  retries: 2,
  retryDelay: 100,
  // Datagrams do get lost, so a timed-out request is sent again (same uid)
  // by default, as the Python UdpClient does. Set false for requests that
  // must not run twice.
  retryOnTimeout: true,
  maxMessageSize: MAX_DATAGRAM - 1, // the request plus its "\n" fit one datagram
});

/** The UDP socket of a UdpClient, connected to the server's address. */
class Endpoint {
  constructor(socket, retryOnTimeout) {
    this.socket = socket;
    this.matcher = new ResponseMatcher();
    this.closed = false;
    this._retryOnTimeout = retryOnTimeout;
    this._done = new Promise((resolve) => socket.once('close', resolve));
    socket.on('message', (message) => this._received(message));
    socket.on('error', (err) => this._unreachable(err));
    socket.on('close', () => {
      this.closed = true;
      this.matcher.failAll(new ConnectionLost('UDP socket closed while a response was awaited'));
    });
  }

  get done() {
    return this._done;
  }

  // On a connected UDP socket the kernel reports ICMP "port unreachable" as
  // ECONNREFUSED. It refuses one datagram and does not say which: alone in
  // flight, that is this request's, which surely did not run (retried). With
  // others in flight, any of them may have reached the server before it went
  // away: as uncertain as a timeout, so retried only if timeouts are.
  _unreachable(err) {
    const reason = `UDP peer unreachable: ${err.message}`;
    this.matcher.failAll(this.matcher.size <= 1 || this._retryOnTimeout
      ? new ConnectFailed(reason, { cause: err })
      : new ConnectionLost(`${reason}; the request may have been processed`, { cause: err }));
  }

  _received(message) {
    let end = message.length;
    if (end > 0 && message[end - 1] === 0x0a) end -= 1;
    if (end === 1 && message[0] === ACK) return; // a heartbeat answer; we send no heartbeats
    let response;
    try {
      response = decodeResponse(message.subarray(0, end));
    } catch (err) {
      if (err instanceof ProtocolViolation) return; // not an ecosys response: dropped, as in Python
      throw err;
    }
    this.matcher.deliver(response);
  }

  request(uid, payload, timeout, closing = null) {
    return this.matcher.wait(uid, (bytes) => {
      if (this.closed) throw new ConnectFailed('UDP socket closed before the request was sent');
      this.socket.send(bytes, (err) => {
        if (!err) return;
        // A refusal pending from an earlier datagram can surface on this send.
        if (err.code === 'ECONNREFUSED') this._unreachable(err);
        else this.matcher.fail(uid, new ConnectFailed(`cannot send to the UDP peer: ${err.message}`, { cause: err }));
      });
    }, payload, timeout, closing);
  }

  close() {
    if (!this.closed) {
      this.closed = true;
      this.matcher.failAll(new ClientClosed('the client was closed while waiting for a response'));
      this.socket.close();
    }
    return this._done;
  }
}

/**
 * Client for an ecosys service on UDP. One socket carries every request;
 * responses are matched by uid, so many requests can be in flight at once.
 */
export class UdpClient extends Client {
  constructor(options = {}) {
    const merged = resolveOptions('UdpClient', options, UDP_DEFAULTS, ['host', 'port']);
    super(merged);
    this.host = checkHost(merged.host);
    this.port = checkPort(merged.port);
    this._endpoint = null;
    this._opening = null;
  }

  get url() {
    return `udp://${hostPort(this.host, this.port)}`;
  }

  _open() {
    if (this._endpoint !== null && !this._endpoint.closed) return Promise.resolve(this._endpoint);
    this._opening ??= new Promise((resolve, reject) => {
      const socket = dgram.createSocket(isIP(this.host) === 6 ? 'udp6' : 'udp4');
      let settled = false;
      const failed = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.on('error', () => {}); // nothing more to report from a socket given up on
        const fail = () => reject(new ConnectFailed(`cannot open a UDP socket to ${this.url}: ${err.message}`, { cause: err }));
        try {
          socket.close(fail); // settle once it is closed: a failed call leaves no handle behind
        } catch {
          fail(); // already closed
        }
      };
      // Connecting looks the host name up; a name that never resolves must not hang the call.
      const timer = setTimeout(() => failed(new Error(`timed out after ${this.connectTimeout} ms`)), this.connectTimeout);
      socket.once('error', failed);
      socket.connect(this.port, this.host, (err) => {
        if (err) {
          failed(err);
          return;
        }
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.off('error', failed);
        this._endpoint = new Endpoint(socket, this.retryOnTimeout);
        resolve(this._endpoint);
      });
    }).finally(() => {
      this._opening = null;
    });
    return this._opening;
  }

  async _exchange(uid, payload, timeout, closing) {
    let endpoint = this._endpoint;
    if (endpoint === null || endpoint.closed) {
      endpoint = await this._open();
      if (closing.aborted) throw new ClientClosed(`the client was closed while connecting to ${this.url}`);
    }
    return endpoint.request(uid, payload, timeout, closing);
  }

  /**
   * Close the socket; requests made before, still waiting, fail with
   * ClientClosed. The client reopens one if used again.
   */
  async close() {
    this._endRequests();
    if (this._opening !== null) await this._opening.catch(() => {});
    const endpoint = this._endpoint;
    this._endpoint = null;
    if (endpoint !== null) await endpoint.close();
  }
}
