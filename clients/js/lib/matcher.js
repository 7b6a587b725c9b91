// Requests in flight on one connection (or UDP socket), keyed by uid, with
// per-uid ordering and timeouts: the same rules as ResponseMatcher in
// src/ecosys/transport/client.py.

import { ClientClosed, RequestTimeout } from './errors.js';

function signal() {
  let fire;
  const promise = new Promise((resolve) => { fire = resolve; });
  return { promise, fire };
}

export class ResponseMatcher {
  constructor() {
    /** uid -> the request in flight with that uid. */
    this.pending = new Map();
    // uid -> marker of a request that timed out. Until its late answer
    // arrives (or as long again as its timeout), another request with that
    // uid must wait, or it would be handed the old request's answer.
    this.abandoned = new Map();
  }

  /** Number of requests waiting for an answer. */
  get size() {
    return this.pending.size;
  }

  /**
   * Register `uid`, call write(payload) and resolve with the matching Response.
   *
   * A request whose uid is already in flight (or was abandoned a moment ago)
   * waits for that one to finish before it is written; its own timeout starts
   * when it is written. write() may throw (ConnectFailed): nothing was sent.
   * If `closing` (an AbortSignal) is aborted meanwhile, it fails with
   * ClientClosed unsent.
   */
  async wait(uid, write, payload, timeout, closing = null) {
    for (;;) {
      const earlier = this.pending.get(uid) ?? this.abandoned.get(uid);
      if (earlier === undefined) break;
      await earlier.finished.promise;
      // Sent now, it would reach a server the caller is done with (or a
      // ConnectFailed would be retried, reopening the client).
      if (closing?.aborted) throw new ClientClosed('the client was closed while waiting for a response');
    }
    // From here to write() nothing yields, so no other caller can slip in.
    const entry = { uid, finished: signal(), timer: null, resolve: null, reject: null };
    const answer = new Promise((resolve, reject) => {
      entry.resolve = resolve;
      entry.reject = reject;
    });
    this.pending.set(uid, entry);
    entry.timer = setTimeout(() => {
      this._settle(entry);
      this._abandon(uid, timeout);
      entry.reject(new RequestTimeout(`no response within ${timeout} ms`));
    }, timeout);
    try {
      write(payload);
    } catch (err) {
      this._settle(entry);
      throw err;
    }
    return answer;
  }

  _settle(entry) {
    clearTimeout(entry.timer);
    if (this.pending.get(entry.uid) === entry) this.pending.delete(entry.uid);
    entry.finished.fire();
  }

  _abandon(uid, window) {
    if (this.abandoned.has(uid)) return;
    const marker = { finished: signal(), timer: null };
    marker.timer = setTimeout(() => this._release(uid, marker), window);
    marker.timer.unref();
    this.abandoned.set(uid, marker);
  }

  _release(uid, marker) {
    clearTimeout(marker.timer);
    if (this.abandoned.get(uid) === marker) this.abandoned.delete(uid);
    marker.finished.fire();
  }

  /**
   * Hand `response` to the request waiting for its uid. The late answer of a
   * timed-out request is swallowed; answers nobody waits for are dropped. A
   * response with a null uid (the server could not read the request's uid)
   * goes to the only request in flight, if there is exactly one.
   * Returns true when a caller got it.
   */
  deliver(response) {
    const { uid } = response;
    let entry;
    if (uid !== null) {
      const marker = this.abandoned.get(uid);
      if (marker !== undefined) {
        this._release(uid, marker);
        return false;
      }
      entry = this.pending.get(uid);
    } else if (this.pending.size === 1 && response.status !== 0) {
      entry = this.pending.values().next().value;
    }
    if (entry === undefined) return false;
    this._settle(entry);
    entry.resolve(response);
    return true;
  }

  /** Fail the request waiting for `uid` (if any) with `error`. */
  fail(uid, error) {
    const entry = this.pending.get(uid);
    if (entry === undefined) return;
    this._settle(entry);
    entry.reject(error);
  }

  /** Fail every waiting request with `error` and forget abandoned uids (the connection is gone). */
  failAll(error) {
    for (const entry of [...this.pending.values()]) {
      this._settle(entry);
      entry.reject(error);
    }
    for (const [uid, marker] of [...this.abandoned]) this._release(uid, marker);
  }
}
