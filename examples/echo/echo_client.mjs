// The echo client in JavaScript (Node.js 18+), using the library in clients/js.
//
// Run it:  node examples/echo/echo_client.mjs tcp://127.0.0.1:8888 "hello"
// (also udp://127.0.0.1:8888 or uds:///tmp/ecosys/echo_server_0.uds.sock)
// Output and exit status match echo_client.py.
import { clientFromUrl, ResponseError, TransportError } from '../../clients/js/index.js';

const url = process.argv[2] ?? 'tcp://127.0.0.1:8888';
const message = process.argv[3] ?? 'hello, ecosys';

const client = clientFromUrl(url, { timeout: 5000 });
try {
  const data = await client.request('echo', { message });
  console.log(`${url}: ${data.message}`);
} catch (err) {
  if (!(err instanceof ResponseError || err instanceof TransportError)) throw err;
  console.log(`${url}: failed: ${err.message}`);
  process.exitCode = 1;
} finally {
  await client.close();
}
