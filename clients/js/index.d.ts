// Type declarations for ecosys-client (hand-written; the library is plain JavaScript).

/// <reference types="node" />

import { EventEmitter } from 'node:events';

/** Any value JSON can carry. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

// ----- protocol ----------------------------------------------------------

/** ASCII ENQ (0x05): a line holding only this byte is a heartbeat request. */
export declare const ENQ: 5;
/** ASCII ACK (0x06): the server's answer to a heartbeat. */
export declare const ACK: 6;
/** ENQ then "\n": what a stream client writes to check its connection. */
export declare const HEARTBEAT_REQUEST: Buffer;
/** 16 MiB: the server's default maximum line length and the stream client's default maxMessageSize. */
export declare const DEFAULT_MAX_MESSAGE_SIZE: number;
/** 65507: the largest IPv4 UDP payload. */
export declare const MAX_DATAGRAM: number;

/** Response status codes (ecosys.Status). */
export declare const Status: Readonly<{
  SUCCESS: 0;
  PROTOCOL_ERROR: 100;
  CLIENT_DENIED: 200;
  VALIDATION_ERROR: 300;
  UNKNOWN_ROUTE: 400;
  APPLICATION_BUSY: 500;
  PROCESSING_FAILURE: 600;
  UNKNOWN: 999;
}>;

/** A fresh random (version 4) uid in lower case, e.g. "0f8fad5b-d9cb-469f-a165-70867728950e". */
export declare function newUid(): string;

/** True for a string in the 8-4-4-4-12 hexadecimal form (either case), the only form the server accepts. */
export declare function isValidUid(value: unknown): value is string;

/** The body of every non-zero response. */
export interface ErrorBody {
  message: string;
  details: JsonValue;
}

/** A response envelope. JSON.stringify(response) gives its wire form (`ok` is a getter). */
export declare class Response<T = any> {
  constructor(uid: string | null, status: number, data?: T);
  /** The request's uid; null only for errors the server could not tie to a request. */
  uid: string | null;
  /** 0 on success; see Status. */
  status: number;
  /** The handler's result on success; an ErrorBody otherwise. */
  data: T;
  /** True when status is 0. */
  readonly ok: boolean;
}

/** Bytes that do not decode into a valid response. */
export declare class ProtocolViolation extends Error {}

/** One request as a UTF-8 line ending in "\n" (undefined, NaN and ±Infinity become null). */
export declare function encodeRequest(uid: string, routeKey: string, data: unknown): Buffer;

/** Decode one response line (without "\n"), or throw ProtocolViolation. */
export declare function decodeResponse(line: Buffer | Uint8Array | string): Response;

/** Splits a byte stream into lines of at most maxSize bytes (the "\n" not counted). */
export declare class LineSplitter {
  constructor(maxSize: number);
  readonly maxSize: number;
  /** Bytes held of a line whose "\n" has not arrived yet. */
  readonly pending: number;
  /** The complete lines in `chunk`, and whether a line grew past maxSize (the splitter then resets). */
  feed(chunk: Buffer): { lines: Buffer[]; overflow: boolean };
}

// ----- errors ------------------------------------------------------------

/** Base class of every error the clients raise on purpose. */
export declare class EcosysError extends Error {
  constructor(message?: string, options?: { cause?: unknown });
}
/** No usable response. */
export declare class TransportError extends EcosysError {}
/** The connection could not be opened, or closed before the request was written. Retried up to `retries` times. */
export declare class ConnectFailed extends TransportError {}
/** The connection closed while a response was awaited. The request may have run; it is not resent. */
export declare class ConnectionLost extends TransportError {}
/** No response within the timeout. The request may still run. */
export declare class RequestTimeout extends TransportError {
  readonly code: 'ETIMEDOUT';
}
/** close() was called while the request waited for its connection, its turn or its answer. Not resent. */
export declare class ClientClosed extends TransportError {}
/** The server sent something that is not a valid response, or a line longer than maxMessageSize. */
export declare class BadResponse extends TransportError {}

/** The server answered with a non-zero status. */
export declare class ResponseError extends EcosysError {
  /** The status this class stands for. */
  static readonly status: number;
  constructor(message: string, details?: JsonValue, options?: { status?: number; uid?: string | null });
  /** The status received. */
  status: number;
  /** The error body's message. */
  message: string;
  /** The error body's details (field errors for 300, { route_key } for 400, ...). */
  details: any;
  /** The request's uid (null when the server could not read it). */
  uid: string | null;
}
/** Status 100: the server could not parse the request. */
export declare class ProtocolErrorResponse extends ResponseError {}
/** Status 200: the server refused this client. */
export declare class ClientDenied extends ResponseError {}
/** Status 300: the data does not fit the endpoint's model; details lists the field errors. */
export declare class ValidationFailed extends ResponseError {}
/** Status 400: no endpoint has this route key. */
export declare class UnknownRoute extends ResponseError {}
/** Status 500: the service will not take this work right now; try later. */
export declare class ApplicationBusy extends ResponseError {}
/** Status 600: the handler raised. */
export declare class ProcessingFailed extends ResponseError {}
/** Status 999, or any status this version does not know. */
export declare class UnknownError extends ResponseError {}

/** The ResponseError subclass for a status. */
export declare function errorClassFor(status: number): typeof ResponseError;
/** The typed error for an error response. */
export declare function responseError(status: number, data: unknown, uid?: string | null): ResponseError;

// ----- clients -----------------------------------------------------------

/** Options every client takes. Durations are in milliseconds. */
export interface ClientOptions {
  /** How long to wait for each response, per attempt. Default 10000 (UDP: 2000). */
  timeout?: number;
  /** How long to wait for a connection to open (UDP: for the address lookup). Default 5000. */
  connectTimeout?: number;
  /** Extra attempts after the first, for failures that may be retried. Default 2. */
  retries?: number;
  /** Pause before retry n: retryDelay * 2 ** (n - 1). Default 100. */
  retryDelay?: number;
  /** Also retry after a timeout (same uid). Default false (UDP: true). */
  retryOnTimeout?: boolean;
  /** Largest request sent and longest response line read, in bytes. Default 16 MiB (UDP: 65506). */
  maxMessageSize?: number;
}

/** Options of TcpClient and UdsClient. */
export interface StreamClientOptions extends ClientOptions {
  /** One shared multiplexed connection (true, default) or one connection per request (false). */
  persistent?: boolean;
  /** Heartbeat period of a persistent connection; 0 or null turns heartbeats off. Default 5000. */
  heartbeatInterval?: number | null;
  /** How long to wait for the heartbeat's answer before dropping the connection. Default 5000. */
  heartbeatTimeout?: number;
}

export interface TcpClientOptions extends StreamClientOptions {
  host: string;
  port: number | string;
}

export interface UdsClientOptions extends StreamClientOptions {
  /** The service's socket path, as printed in its start-up banner. */
  path: string;
}

export interface UdpClientOptions extends ClientOptions {
  host: string;
  port: number | string;
}

/** Per-call options of send() and request(). */
export interface CallOptions {
  /** The request's uid (8-4-4-4-12 hex). Default: a fresh one. A malformed uid throws TypeError. */
  uid?: string;
  /** This call's timeout in ms, instead of the client's. */
  timeout?: number;
}

/** What every client does. */
export declare abstract class Client extends EventEmitter {
  readonly timeout: number;
  readonly connectTimeout: number;
  readonly retries: number;
  readonly retryDelay: number;
  readonly retryOnTimeout: boolean;
  readonly maxMessageSize: number;
  /** The address as a URL: tcp://host:port, udp://host:port or uds:///path. */
  readonly url: string;
  /** Send a request; resolve with the response envelope whatever its status. Rejects only with a TransportError (or TypeError/RangeError for bad arguments). */
  send<T = any>(routeKey: string, data?: unknown, options?: CallOptions): Promise<Response<T>>;
  /** Send a request; resolve with its data, or reject with the ResponseError subclass for its status (or a TransportError). */
  request<T = any>(routeKey: string, data?: unknown, options?: CallOptions): Promise<T>;
  /** Close sockets; requests made before it that are still waiting fail with ClientClosed. The client can be used again. */
  close(): Promise<void>;
}

/** Events of TcpClient and UdsClient. */
export interface StreamClientEvents {
  /** The shared connection opened. */
  connect: [];
  /** The shared connection closed; the error says why. */
  disconnect: [error: Error];
  /** A heartbeat was answered after `rtt` ms. */
  heartbeat: [rtt: number];
}

export declare abstract class StreamClient extends Client {
  readonly persistent: boolean;
  readonly heartbeatInterval: number | null;
  readonly heartbeatTimeout: number;
  /** True while the shared connection is open. */
  readonly connected: boolean;
  on<K extends keyof StreamClientEvents>(event: K, listener: (...args: StreamClientEvents[K]) => void): this;
  once<K extends keyof StreamClientEvents>(event: K, listener: (...args: StreamClientEvents[K]) => void): this;
  off<K extends keyof StreamClientEvents>(event: K, listener: (...args: StreamClientEvents[K]) => void): this;
}

/** Client for a service on TCP. */
export declare class TcpClient extends StreamClient {
  constructor(options: TcpClientOptions);
  readonly host: string;
  readonly port: number;
}

/** Client for a service on a Unix domain socket. */
export declare class UdsClient extends StreamClient {
  constructor(options: UdsClientOptions);
  readonly path: string;
}

/** Client for a service on UDP: one datagram per request, matched by uid. */
export declare class UdpClient extends Client {
  constructor(options: UdpClientOptions);
  readonly host: string;
  readonly port: number;
}

/** A client for "tcp://host:port", "udp://host:port" or "uds:///absolute/path"; options go to its constructor. */
export declare function clientFromUrl(url: `tcp://${string}`, options?: StreamClientOptions): TcpClient;
export declare function clientFromUrl(url: `uds://${string}`, options?: StreamClientOptions): UdsClient;
export declare function clientFromUrl(url: `udp://${string}`, options?: ClientOptions): UdpClient;
export declare function clientFromUrl(url: string, options?: StreamClientOptions | ClientOptions): Client;
