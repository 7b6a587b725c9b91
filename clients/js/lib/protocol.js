// The wire protocol (docs/protocol.md): envelopes, status codes, uids,
// encoding, decoding and line framing. Nothing here touches a socket.

import { randomUUID } from 'node:crypto';

/** ASCII ENQ: a line holding only this byte is a heartbeat request. */
export const ENQ = 0x05;
/** ASCII ACK: the server's answer to a heartbeat. */
export const ACK = 0x06;
/** The bytes a client writes to check a stream connection: ENQ then a newline. */
export const HEARTBEAT_REQUEST = Buffer.from([ENQ, 0x0a]);
/** The server's default (and the client's) largest line, in bytes, without the newline: 16 MiB. */
export const DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024;
/** The largest payload of an IPv4 UDP datagram. */
export const MAX_DATAGRAM = 65507;

/** Response status codes (ecosys.Status). */
export const Status = Object.freeze({
  SUCCESS: 0,
  PROTOCOL_ERROR: 100,
  CLIENT_DENIED: 200,
  VALIDATION_ERROR: 300,
  UNKNOWN_ROUTE: 400,
  APPLICATION_BUSY: 500,
  PROCESSING_FAILURE: 600,
  UNKNOWN: 999,
});

// The server's rule (is_valid_uid in src/ecosys/protocol.py): the whole string
// is the 8-4-4-4-12 hexadecimal form, either case, nothing else. In a JS
// regular expression without the m flag, $ matches only at the very end.
const CANONICAL_UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** A fresh random (version 4) uid in lower case. */
export function newUid() {
  return randomUUID();
}

/** True when `value` is a string the server accepts as a uid. */
export function isValidUid(value) {
  return typeof value === 'string' && CANONICAL_UUID.test(value);
}

/** A decoded response envelope: `uid`, `status`, `data`, and `ok` (status is 0). */
export class Response {
  constructor(uid, status, data = null) {
    this.uid = uid;
    this.status = status;
    this.data = data;
  }

  /** True when the status is 0. A getter, so JSON.stringify(response) gives the wire form. */
  get ok() {
    return this.status === Status.SUCCESS;
  }
}

/** Bytes that cannot be decoded into a valid response. */
export class ProtocolViolation extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProtocolViolation';
  }
}

/**
 * Encode a request as one UTF-8 line ending in "\n".
 *
 * `data` goes through JSON.stringify: `undefined` is sent as null, and so are
 * NaN and ±Infinity (JSON has no such numbers); objects with toJSON() (Date)
 * use it; a BigInt or a cycle throws a TypeError.
 */
export function encodeRequest(uid, routeKey, data) {
  const text = JSON.stringify({ uid, route_key: routeKey, data: data === undefined ? null : data });
  return Buffer.from(text + '\n', 'utf8');
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Decode one response line (without its newline) into a Response, or throw
 * ProtocolViolation. The same checks as the Python client: a JSON object
 * with an integer status and a string uid (null only with a non-zero status).
 */
export function decodeResponse(line) {
  let obj;
  try {
    obj = JSON.parse(typeof line === 'string' ? line : utf8.decode(line));
  } catch (err) {
    throw new ProtocolViolation(`response is not valid JSON: ${err.message}`);
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new ProtocolViolation('response is not a JSON object');
  }
  const { uid = null, status, data = null } = obj;
  if (!Number.isInteger(status) || !(typeof uid === 'string' || (uid === null && status !== 0))) {
    throw new ProtocolViolation('response lacks an integer status or a string uid');
  }
  return new Response(uid, status, data);
}

/**
 * Split a byte stream into lines, bounded by a maximum line size.
 *
 * feed(chunk) returns { lines, overflow }: the complete lines in the chunk
 * (Buffers, without "\n") and whether a line grew past `maxSize` bytes. After
 * an overflow the lines before the oversized one are returned and the
 * splitter is reset. A partial line is kept as a list of chunks and only new
 * bytes are searched, so a large line arriving in small pieces costs linear time.
 */
export class LineSplitter {
  constructor(maxSize) {
    this.maxSize = maxSize;
    this._parts = [];
    this._partialLength = 0;
  }

  /** Bytes held of a line whose newline has not arrived yet. */
  get pending() {
    return this._partialLength;
  }

  _reset() {
    this._parts = [];
    this._partialLength = 0;
  }

  feed(chunk) {
    const lines = [];
    const limit = this.maxSize;
    let start = 0;
    let end = chunk.indexOf(0x0a);
    if (this._partialLength > 0) {
      if (end < 0) {
        this._parts.push(chunk);
        this._partialLength += chunk.length;
        if (this._partialLength > limit) {
          this._reset();
          return { lines, overflow: true };
        }
        return { lines, overflow: false };
      }
      if (this._partialLength + end > limit) {
        this._reset();
        return { lines, overflow: true };
      }
      this._parts.push(chunk.subarray(0, end));
      lines.push(Buffer.concat(this._parts, this._partialLength + end));
      this._reset();
      start = end + 1;
      end = chunk.indexOf(0x0a, start);
    }
    while (end >= 0) {
      if (end - start > limit) {
        return { lines, overflow: true };
      }
      lines.push(chunk.subarray(start, end));
      start = end + 1;
      end = chunk.indexOf(0x0a, start);
    }
    if (start < chunk.length) {
      if (chunk.length - start > limit) {
        return { lines, overflow: true };
      }
      this._parts.push(chunk.subarray(start));
      this._partialLength = chunk.length - start;
    }
    return { lines, overflow: false };
  }
}
