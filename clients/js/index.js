// ecosys-client: a dependency-free Node.js client for ecosys services
// (newline-delimited JSON over TCP, Unix domain sockets and UDP).
// See README.md and docs/javascript-client.md in the ecosys repository.

export { Client } from './lib/client.js';
export { TcpClient, UdsClient, StreamClient } from './lib/stream.js';
export { UdpClient } from './lib/udp.js';
export { clientFromUrl } from './lib/url.js';
export {
  ACK,
  DEFAULT_MAX_MESSAGE_SIZE,
  ENQ,
  HEARTBEAT_REQUEST,
  LineSplitter,
  MAX_DATAGRAM,
  ProtocolViolation,
  Response,
  Status,
  decodeResponse,
  encodeRequest,
  isValidUid,
  newUid,
} from './lib/protocol.js';
export {
  ApplicationBusy,
  BadResponse,
  ClientClosed,
  ClientDenied,
  ConnectFailed,
  ConnectionLost,
  EcosysError,
  ProcessingFailed,
  ProtocolErrorResponse,
  RequestTimeout,
  ResponseError,
  TransportError,
  UnknownError,
  UnknownRoute,
  ValidationFailed,
  errorClassFor,
  responseError,
} from './lib/errors.js';
