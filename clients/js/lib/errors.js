// The exceptions clients raise, with the same names and tree as ecosys.errors:
//
// EcosysError
// ├── TransportError              no usable response
// │   ├── ConnectFailed           could not connect / send (retried)
// │   ├── ConnectionLost          connection dropped while waiting
// │   ├── RequestTimeout          no response in time
// │   ├── ClientClosed            client closed while the request waited (not retried)
// │   └── BadResponse             invalid response from the server
// └── ResponseError               the server answered with a non-zero status
//     ├── ProtocolErrorResponse   100
//     ├── ClientDenied            200
//     ├── ValidationFailed        300
//     ├── UnknownRoute            400
//     ├── ApplicationBusy         500
//     ├── ProcessingFailed        600
//     └── UnknownError            999, or any status this version does not know

import { Status } from './protocol.js';

/** Base class of every error this library raises on purpose. */
export class EcosysError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A request could not be delivered or its response not received. */
export class TransportError extends EcosysError {}

/** The connection could not be opened, or closed before the request was written (safe to retry). */
export class ConnectFailed extends TransportError {}

/** The connection closed while a response was awaited (the request may have run). */
export class ConnectionLost extends TransportError {}

/** No response arrived within the timeout (the request may still run). */
export class RequestTimeout extends TransportError {
  constructor(message, options) {
    super(message, options);
    this.code = 'ETIMEDOUT';
  }
}

/**
 * close() was called while the request waited: for its connection, its turn
 * or its answer. Not retried: a request already sent may have been processed.
 */
export class ClientClosed extends TransportError {}

/** The server sent bytes that are not a valid response, or a line longer than maxMessageSize. */
export class BadResponse extends TransportError {}

/**
 * The server answered with a non-zero status.
 *
 * `.status`, `.message` and `.details` come from the response (the error
 * body is `{"message": ..., "details": ...}`), `.uid` is the request's uid.
 * `String(err)` is `"ValidationFailed: status 300: request data does not fit 'echo'"`.
 */
export class ResponseError extends EcosysError {
  /** The status this class stands for (instances carry the status actually received). */
  static status = Status.UNKNOWN;

  constructor(message, details = null, { status, uid = null } = {}) {
    super(message);
    this.status = status ?? new.target.status;
    this.details = details;
    this.uid = uid;
  }

  toString() {
    return `${this.name}: status ${this.status}: ${this.message}`;
  }
}

/** Status 100: the server could not parse the request. */
export class ProtocolErrorResponse extends ResponseError {
  static status = Status.PROTOCOL_ERROR;
}

/** Status 200: the server refused this client. */
export class ClientDenied extends ResponseError {
  static status = Status.CLIENT_DENIED;
}

/** Status 300: the request data does not fit the endpoint's model. */
export class ValidationFailed extends ResponseError {
  static status = Status.VALIDATION_ERROR;
}

/** Status 400: the server has no endpoint for the route key. */
export class UnknownRoute extends ResponseError {
  static status = Status.UNKNOWN_ROUTE;
}

/** Status 500: the server is not accepting this work right now. */
export class ApplicationBusy extends ResponseError {
  static status = Status.APPLICATION_BUSY;
}

/** Status 600: the handler raised. */
export class ProcessingFailed extends ResponseError {
  static status = Status.PROCESSING_FAILURE;
}

/** Status 999, or any status this version does not know. */
export class UnknownError extends ResponseError {
  static status = Status.UNKNOWN;
}

const BY_STATUS = new Map(
  [ProtocolErrorResponse, ClientDenied, ValidationFailed, UnknownRoute, ApplicationBusy,
    ProcessingFailed, UnknownError].map((cls) => [cls.status, cls]),
);

/** The ResponseError subclass for a status (UnknownError for any status not listed). */
export function errorClassFor(status) {
  return BY_STATUS.get(status) ?? UnknownError;
}

/** Build the typed error for an error response's status, data and uid. */
export function responseError(status, data, uid = null) {
  let message = 'error response';
  let details = null;
  if (data !== null && typeof data === 'object' && !Array.isArray(data)) {
    if (data.message !== undefined) message = String(data.message);
    details = data.details ?? null;
  } else if (data !== null && data !== undefined) {
    message = typeof data === 'string' ? data : JSON.stringify(data);
  }
  const cls = errorClassFor(status);
  return new cls(message, details, { status, uid });
}
