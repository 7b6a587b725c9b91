// clientFromUrl(): the same URL forms as ecosys.client_from_url.

import { TcpClient, UdsClient } from './stream.js';
import { UdpClient } from './udp.js';

/**
 * Build a client from a URL: "tcp://host:port", "udp://host:port" (IPv6 as
 * "[::1]:port") or "uds:///absolute/path" ("uds://relative/path" is relative
 * to the current directory). `options` go to the client's constructor.
 */
export function clientFromUrl(url, options = {}) {
  if (typeof url !== 'string') throw new TypeError(`url must be a string, got ${String(url)}`);
  const match = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(.*)$/s.exec(url);
  if (match === null) {
    throw new TypeError(`${JSON.stringify(url)}: expected tcp://host:port, udp://host:port or uds:///path`);
  }
  const scheme = match[1].toLowerCase();
  const rest = match[2];
  if (/[?#]/.test(rest)) {
    // Dropped silently, a typo or a pasted HTTP URL would talk to some other address.
    throw new TypeError(`${JSON.stringify(url)}: a service URL has no query or fragment`);
  }
  if (scheme === 'uds') {
    if (rest === '') throw new TypeError(`${JSON.stringify(url)}: a uds URL needs a path, e.g. uds:///run/app.sock`);
    return new UdsClient({ ...options, path: rest });
  }
  if (scheme === 'tcp' || scheme === 'udp') {
    const slash = rest.indexOf('/');
    const authority = slash < 0 ? rest : rest.slice(0, slash);
    const path = slash < 0 ? '' : rest.slice(slash);
    if ((path !== '' && path !== '/') || authority.includes('@')) {
      throw new TypeError(`${JSON.stringify(url)}: expected ${scheme}://host:port, with no path or user`);
    }
    const parts = /^(\[[^\]]+\]|[^:[\]]+):([0-9]+)$/.exec(authority);
    if (parts === null) throw new TypeError(`${JSON.stringify(url)}: expected ${scheme}://host:port`);
    const host = parts[1].startsWith('[') ? parts[1].slice(1, -1) : parts[1].toLowerCase();
    const port = Number(parts[2]);
    if (port < 1 || port > 65535) {
      // A TypeError like every other malformed URL, not the constructor's RangeError.
      throw new TypeError(`${JSON.stringify(url)}: port must be from 1 to 65535`);
    }
    const Cls = scheme === 'tcp' ? TcpClient : UdpClient;
    return new Cls({ ...options, host, port });
  }
  throw new TypeError(`${JSON.stringify(url)}: unknown scheme; use tcp://, udp:// or uds://`);
}
