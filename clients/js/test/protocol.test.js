// The protocol pieces on their own: uids, encoding, decoding, framing, the
// error classes, URLs and option checks. No server needed.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  ApplicationBusy, BadResponse, ClientClosed, ClientDenied, ConnectFailed, ConnectionLost, DEFAULT_MAX_MESSAGE_SIZE,
  EcosysError, HEARTBEAT_REQUEST, LineSplitter, MAX_DATAGRAM, ProcessingFailed, ProtocolErrorResponse,
  ProtocolViolation, RequestTimeout, Response, ResponseError, Status, TcpClient, TransportError, UdpClient,
  UdsClient, UnknownError, UnknownRoute, ValidationFailed, clientFromUrl, decodeResponse, encodeRequest,
  errorClassFor, isValidUid, newUid, responseError,
} from '../index.js';

describe('uids', () => {
  test('newUid gives a lower-case version 4 uid the server accepts', () => {
    const seen = new Set();
    for (let i = 0; i < 1000; i += 1) {
      const uid = newUid();
      assert.match(uid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      assert.ok(isValidUid(uid));
      seen.add(uid);
    }
    assert.equal(seen.size, 1000);
  });

  test('isValidUid follows the server rule: the 8-4-4-4-12 hex form only', () => {
    for (const good of [
      '0f8fad5b-d9cb-469f-a165-70867728950e',
      '0F8FAD5B-D9CB-469F-A165-70867728950E',
      '00000000-0000-0000-0000-000000000000', // nil: version and variant are not checked
      'ffffffff-ffff-ffff-ffff-ffffffffffff',
    ]) assert.ok(isValidUid(good), good);
    for (const bad of [
      '', 'abc', 'not-a-uuid', '{0f8fad5b-d9cb-469f-a165-70867728950e}',
      'urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e', '0f8fad5bd9cb469fa16570867728950e',
      ' 0f8fad5b-d9cb-469f-a165-70867728950e', '0f8fad5b-d9cb-469f-a165-70867728950e ',
      '0f8fad5b-d9cb-469f-a165-70867728950e\n', '0f8fad5g-d9cb-469f-a165-70867728950e',
      '0f8fad5b-d9cb-469f-a165-70867728950', 12, null, undefined, {},
    ]) assert.equal(isValidUid(bad), false, JSON.stringify(bad));
  });
});

describe('encoding and decoding', () => {
  test('a request is one compact UTF-8 line', () => {
    const uid = '0f8fad5b-d9cb-469f-a165-70867728950e';
    const bytes = encodeRequest(uid, 'echo', { message: 'hé\nllo' });
    assert.equal(bytes.toString('utf8'),
      '{"uid":"0f8fad5b-d9cb-469f-a165-70867728950e","route_key":"echo","data":{"message":"hé\\nllo"}}\n');
    assert.equal(bytes.indexOf(0x0a), bytes.length - 1); // newlines inside strings are escaped
  });

  test('undefined, NaN and Infinity are sent as null', () => {
    const uid = newUid();
    const parse = (data) => JSON.parse(encodeRequest(uid, 'r', data).toString()).data;
    assert.equal(parse(undefined), null);
    assert.deepEqual(parse({ a: NaN, b: Infinity, c: -Infinity }), { a: null, b: null, c: null });
    assert.throws(() => encodeRequest(uid, 'r', { n: 10n }), TypeError);
  });

  test('decodeResponse accepts what the server sends', () => {
    const ok = decodeResponse(Buffer.from('{"uid":"0f8fad5b-d9cb-469f-a165-70867728950e","status":0,"data":{"message":"hi"}}'));
    assert.ok(ok instanceof Response);
    assert.equal(ok.ok, true);
    assert.deepEqual(ok.data, { message: 'hi' });
    assert.equal(JSON.stringify(ok), '{"uid":"0f8fad5b-d9cb-469f-a165-70867728950e","status":0,"data":{"message":"hi"}}');
    const error = decodeResponse('{"uid":null,"status":100,"data":{"message":"message is not a JSON object","details":null}}');
    assert.equal(error.uid, null);
    assert.equal(error.ok, false);
    assert.equal(decodeResponse('{"status":0,"uid":"x","extra":1}').data, null); // field order and extras do not matter
  });

  test('decodeResponse refuses what is not a response', () => {
    for (const bad of [
      'hello', '[1,2]', 'null', '{"uid":"x"}', '{"uid":"x","status":"0"}', '{"uid":"x","status":1.5}',
      '{"uid":null,"status":0}', '{"status":0}', '{"uid":7,"status":100}',
    ]) assert.throws(() => decodeResponse(bad), ProtocolViolation, bad);
    assert.throws(() => decodeResponse(Buffer.from([0x7b, 0xff, 0x7d])), ProtocolViolation); // not UTF-8
  });

  test('constants match the protocol', () => {
    assert.deepEqual([...HEARTBEAT_REQUEST], [0x05, 0x0a]);
    assert.equal(DEFAULT_MAX_MESSAGE_SIZE, 16777216);
    assert.equal(MAX_DATAGRAM, 65507);
    assert.deepEqual(Status, {
      SUCCESS: 0, PROTOCOL_ERROR: 100, CLIENT_DENIED: 200, VALIDATION_ERROR: 300, UNKNOWN_ROUTE: 400,
      APPLICATION_BUSY: 500, PROCESSING_FAILURE: 600, UNKNOWN: 999,
    });
  });
});

describe('LineSplitter', () => {
  const text = (result) => result.lines.map((line) => line.toString());

  test('many lines in a chunk, and lines split across chunks', () => {
    const splitter = new LineSplitter(100);
    assert.deepEqual(text(splitter.feed(Buffer.from('a\nbb\ncc'))), ['a', 'bb']);
    assert.equal(splitter.pending, 2);
    assert.deepEqual(text(splitter.feed(Buffer.from('c'))), []);
    assert.deepEqual(text(splitter.feed(Buffer.from('c\n\nd\n'))), ['cccc', '', 'd']);
    assert.equal(splitter.pending, 0);
  });

  test('byte by byte', () => {
    const splitter = new LineSplitter(100);
    const lines = [];
    for (const byte of Buffer.from('{"x":1}\n{"y":2}\n')) lines.push(...text(splitter.feed(Buffer.from([byte]))));
    assert.deepEqual(lines, ['{"x":1}', '{"y":2}']);
  });

  test('a line of exactly maxSize bytes passes; one byte more overflows', () => {
    assert.deepEqual(new LineSplitter(4).feed(Buffer.from('abcd\n')), { lines: [Buffer.from('abcd')], overflow: false });
    const result = new LineSplitter(4).feed(Buffer.from('ok\nabcde\n'));
    assert.deepEqual(text(result), ['ok']); // the lines before the oversized one still count
    assert.equal(result.overflow, true);
  });

  test('overflow is noticed before the newline arrives', () => {
    const splitter = new LineSplitter(4);
    assert.equal(splitter.feed(Buffer.from('abc')).overflow, false);
    assert.equal(splitter.feed(Buffer.from('de')).overflow, true);
    assert.equal(splitter.pending, 0);
    const other = new LineSplitter(4);
    assert.equal(other.feed(Buffer.from('abcdef')).overflow, true);
    const joined = new LineSplitter(4);
    joined.feed(Buffer.from('ab'));
    assert.equal(joined.feed(Buffer.from('cde\n')).overflow, true);
  });
});

describe('errors', () => {
  test('the class tree mirrors ecosys.errors', () => {
    for (const cls of [ConnectFailed, ConnectionLost, RequestTimeout, ClientClosed, BadResponse]) {
      assert.ok(new cls('x') instanceof TransportError);
      assert.ok(new cls('x') instanceof EcosysError);
      assert.ok(new cls('x') instanceof Error);
    }
    assert.equal(new ConnectFailed('x').name, 'ConnectFailed');
    assert.ok(new ValidationFailed('x') instanceof ResponseError);
    assert.equal(new RequestTimeout('x').code, 'ETIMEDOUT');
  });

  test('each status maps to its class', () => {
    const expected = new Map([
      [100, ProtocolErrorResponse], [200, ClientDenied], [300, ValidationFailed], [400, UnknownRoute],
      [500, ApplicationBusy], [600, ProcessingFailed], [999, UnknownError], [777, UnknownError], [0, UnknownError],
    ]);
    for (const [status, cls] of expected) {
      assert.equal(errorClassFor(status), cls);
      const err = responseError(status, { message: 'm', details: { d: 1 } }, 'u');
      assert.ok(err instanceof cls);
      assert.ok(err instanceof ResponseError);
      assert.equal(err.status, status);
      assert.equal(err.message, 'm');
      assert.deepEqual(err.details, { d: 1 });
      assert.equal(err.uid, 'u');
    }
    assert.equal(String(responseError(300, { message: "request data does not fit 'echo'" })),
      "ValidationFailed: status 300: request data does not fit 'echo'");
    assert.equal(new UnknownRoute('x').status, 400);
  });

  test('odd error bodies still make an error', () => {
    assert.equal(responseError(600, null).message, 'error response');
    assert.equal(responseError(600, 'plain text').message, 'plain text');
    assert.equal(responseError(600, { details: 5 }).message, 'error response');
    assert.equal(responseError(600, { details: 5 }).details, 5);
  });
});

describe('clientFromUrl and options', () => {
  test('URL forms', () => {
    const tcp = clientFromUrl('tcp://127.0.0.1:8888', { timeout: 1234 });
    assert.ok(tcp instanceof TcpClient);
    assert.equal(tcp.host, '127.0.0.1');
    assert.equal(tcp.port, 8888);
    assert.equal(tcp.timeout, 1234);
    assert.equal(tcp.url, 'tcp://127.0.0.1:8888');
    const udp = clientFromUrl('UDP://[::1]:9');
    assert.ok(udp instanceof UdpClient);
    assert.equal(udp.host, '::1');
    assert.equal(udp.url, 'udp://[::1]:9');
    const uds = clientFromUrl('uds:///tmp/ecosys/echo_server_0.uds.sock');
    assert.ok(uds instanceof UdsClient);
    assert.equal(uds.path, '/tmp/ecosys/echo_server_0.uds.sock');
    assert.equal(uds.url, 'uds:///tmp/ecosys/echo_server_0.uds.sock');
    assert.equal(clientFromUrl('uds://run/app.sock').path, 'run/app.sock');
    assert.equal(clientFromUrl('tcp://Example.COM:80/').host, 'example.com');
    for (const bad of ['http://x:1', 'tcp://host', 'tcp://:80', 'udp://h:port', 'uds://', 'nonsense', 'tcp://h:0', 'tcp://h:70000']) {
      assert.throws(() => clientFromUrl(bad), /expected|unknown scheme|needs a path|port must be/, bad);
    }
  });

  test('defaults', () => {
    const tcp = new TcpClient({ host: 'localhost', port: 1 });
    assert.deepEqual(
      [tcp.timeout, tcp.connectTimeout, tcp.retries, tcp.retryDelay, tcp.retryOnTimeout, tcp.maxMessageSize,
        tcp.persistent, tcp.heartbeatInterval, tcp.heartbeatTimeout],
      [10000, 5000, 2, 100, false, 16777216, true, 5000, 5000],
    );
    const udp = new UdpClient({ host: 'localhost', port: '1' });
    assert.deepEqual([udp.port, udp.timeout, udp.retries, udp.retryOnTimeout, udp.maxMessageSize], [1, 2000, 2, true, 65506]);
    assert.equal(new UdsClient({ path: '/x', heartbeatInterval: 0 }).heartbeatInterval, null);
    assert.equal(new UdsClient({ path: '/x', heartbeatInterval: null }).heartbeatInterval, null);
  });

  test('bad options are refused when the client is made', () => {
    const base = { host: '127.0.0.1', port: 1 };
    assert.throws(() => new TcpClient({ ...base, timeout: 0 }), RangeError);
    assert.throws(() => new TcpClient({ ...base, timeout: -1 }), RangeError);
    assert.throws(() => new TcpClient({ ...base, timeout: 2 ** 31 }), RangeError);
    assert.throws(() => new TcpClient({ ...base, connectTimeout: 0 }), RangeError);
    assert.throws(() => new TcpClient({ ...base, retries: -1 }), RangeError);
    assert.throws(() => new TcpClient({ ...base, retries: 1.5 }), RangeError);
    assert.throws(() => new TcpClient({ ...base, timeout: '5' }), TypeError);
    assert.throws(() => new TcpClient({ ...base, heartbeat_interval: 1 }), /unknown option "heartbeat_interval"/);
    assert.throws(() => new UdpClient({ ...base, persistent: false }), /unknown option "persistent"/);
    assert.throws(() => new TcpClient({ port: 1 }), TypeError);
    assert.throws(() => new TcpClient({ host: 'h', port: 0 }), RangeError);
    assert.throws(() => new UdsClient({}), TypeError);
  });

  test('bad arguments to send() are refused before anything is opened', async () => {
    const client = new TcpClient({ host: '127.0.0.1', port: 1, retries: 0 });
    await assert.rejects(client.send('echo', null, { uid: 'not-a-uuid' }), (err) => err instanceof TypeError && /uid must be a UUID/.test(err.message));
    await assert.rejects(client.send(42), TypeError);
    await assert.rejects(client.send('echo', null, { timeout: 0 }), RangeError);
    await assert.rejects(client.request('echo', null, { timeOut: 5 }), /unknown call option "timeOut"/);
    const small = new TcpClient({ host: '127.0.0.1', port: 1, maxMessageSize: 100 });
    await assert.rejects(small.send('echo', { message: 'x'.repeat(200) }),
      (err) => err instanceof TransportError && /exceeds the maximum message size of 100/.test(err.message));
    assert.equal(client.connected, false);
    assert.equal(small.connected, false);
  });
});
