// What every transport shares: options, uid handling, encoding, the size
// check, bounded retries and turning error statuses into errors. The same
// rules as Client in src/ecosys/transport/client.py.

import { EventEmitter, setMaxListeners } from 'node:events';
import { isIP } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

import { ClientClosed, ConnectFailed, RequestTimeout, TransportError, responseError } from './errors.js';
import { encodeRequest, isValidUid, newUid } from './protocol.js';

// setTimeout() fires at once (with a warning) for delays above this.
const MAX_DELAY = 2 ** 31 - 1;

/** Check a duration in milliseconds: a finite number > 0 (>= 0 with allowZero) that setTimeout can wait. */
export function checkDuration(name, value, { allowZero = false } = {}) {
  if (typeof value !== 'number' || Number.isNaN(value)) {
    throw new TypeError(`${name} must be a number of milliseconds, got ${describe(value)}`);
  }
  if (!(allowZero ? value >= 0 : value > 0) || value > MAX_DELAY) {
    throw new RangeError(
      `${name} must be ${allowZero ? '>= 0' : '> 0'} and at most ${MAX_DELAY} ms, got ${value}`,
    );
  }
  return value;
}

function checkCount(name, value, min) {
  if (!Number.isInteger(value) || value < min) {
    throw new RangeError(`${name} must be an integer >= ${min}, got ${describe(value)}`);
  }
  return value;
}

/** Check a port: an integer (or a string of digits) from 1 to 65535. */
export function checkPort(value) {
  const port = typeof value === 'string' && /^[0-9]+$/.test(value) ? Number(value) : value;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(`port must be an integer from 1 to 65535, got ${describe(value)}`);
  }
  return port;
}

/** Check a host name or address: a non-empty string; "[::1]" becomes "::1". */
export function checkHost(value) {
  if (typeof value !== 'string' || value === '') {
    throw new TypeError(`host must be a non-empty string, got ${describe(value)}`);
  }
  return value.startsWith('[') && value.endsWith(']') ? value.slice(1, -1) : value;
}

/** host:port for a URL, with IPv6 addresses in brackets. */
export function hostPort(host, port) {
  return `${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
}

function newCloseController() {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal); // one listener per request connecting or waiting to retry
  return controller;
}

function describe(value) {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

const CALL_OPTIONS = new Set(['uid', 'timeout']);

function checkCallOptions(options) {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`call options must be an object like { uid, timeout }, got ${describe(options)}`);
  }
  for (const key of Object.keys(options)) {
    if (!CALL_OPTIONS.has(key)) throw new TypeError(`unknown call option ${JSON.stringify(key)}; known: uid, timeout`);
  }
  return options;
}

/**
 * Merge `options` over `defaults`, refusing names nobody knows (a misspelt
 * or snake_case option would otherwise be ignored without a word).
 */
export function resolveOptions(className, options, defaults, required) {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`${className} takes an options object, got ${describe(options)}`);
  }
  const known = new Set([...Object.keys(defaults), ...required]);
  for (const key of Object.keys(options)) {
    if (!known.has(key)) {
      throw new TypeError(`${className}: unknown option ${JSON.stringify(key)}; known: ${[...known].join(', ')}`);
    }
  }
  const merged = { ...defaults };
  for (const [key, value] of Object.entries(options)) {
    if (value !== undefined) merged[key] = value;
  }
  return merged;
}

/**
 * Base of TcpClient, UdsClient and UdpClient: timeouts, bounded retries and
 * response checking. Subclasses implement _exchange() and close().
 *
 * Only failures where the request surely did not reach the server
 * (ConnectFailed) are retried, plus timeouts when retryOnTimeout is set: a
 * request that may have been processed is never sent twice unless you say
 * that is safe.
 */
export class Client extends EventEmitter {
  constructor(options) {
    super();
    this.timeout = checkDuration('timeout', options.timeout);
    this.connectTimeout = checkDuration('connectTimeout', options.connectTimeout);
    this.retries = checkCount('retries', options.retries, 0);
    this.retryDelay = checkDuration('retryDelay', options.retryDelay, { allowZero: true });
    this.retryOnTimeout = Boolean(options.retryOnTimeout);
    this.maxMessageSize = checkCount('maxMessageSize', options.maxMessageSize, 1);
    this._closing = newCloseController();
  }

  /** The server's address as a URL (tcp://, udp:// or uds://). */
  get url() {
    throw new Error('not implemented');
  }

  /**
   * Send one request; resolve with the response envelope whatever its
   * status. Rejects only for transport failures (TransportError subclasses),
   * a malformed uid (TypeError) or data JSON cannot hold (TypeError).
   */
  async send(routeKey, data = null, options = {}) {
    const { uid: given, timeout } = checkCallOptions(options);
    let uid = given;
    if (typeof routeKey !== 'string') {
      throw new TypeError(`routeKey must be a string, got ${describe(routeKey)}`);
    }
    if (uid === undefined || uid === null) {
      uid = newUid();
    } else if (!isValidUid(uid)) {
      throw new TypeError(`uid must be a UUID string like ${JSON.stringify(newUid())}, got ${describe(uid)}`);
    }
    const limit = timeout === undefined || timeout === null ? this.timeout : checkDuration('timeout', timeout);
    const payload = encodeRequest(uid, routeKey, data);
    if (payload.length - 1 > this.maxMessageSize) {
      throw new TransportError(
        `request of ${payload.length - 1} bytes exceeds the maximum message size of ${this.maxMessageSize}`,
      );
    }
    // Aborted by close(): this request then ends there, and is never retried
    // into a client the caller has closed. Requests made later get a new signal.
    const closing = this._closing.signal;
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await this._exchange(uid, payload, limit, closing);
      } catch (err) {
        const retriable = err instanceof ConnectFailed || (err instanceof RequestTimeout && this.retryOnTimeout);
        if (!retriable || attempt >= this.retries) throw err;
        try {
          await sleep(this.retryDelay * 2 ** attempt, undefined, { signal: closing });
        } catch {
          throw new ClientClosed('the client was closed while the request waited to be retried', { cause: err });
        }
      }
    }
  }

  /**
   * Send one request and resolve with its `data`. A non-zero status rejects
   * with the matching ResponseError subclass.
   */
  async request(routeKey, data = null, options = {}) {
    const response = await this.send(routeKey, data, options);
    if (response.status !== 0) {
      throw responseError(response.status, response.data, response.uid);
    }
    return response.data;
  }

  /** Close sockets; the client reconnects if used again. */
  async close() {
    this._endRequests();
  }

  /** Fail the requests made so far with ClientClosed wherever they wait (subclasses' close() calls this first). */
  _endRequests() {
    const ending = this._closing;
    this._closing = newCloseController();
    ending.abort();
  }

  async _exchange(_uid, _payload, _timeout, _closing) {
    throw new Error('not implemented');
  }

  toString() {
    return `${this.constructor.name}(${this.url})`;
  }
}
