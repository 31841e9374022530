// The bridge's REST API as the page calls it, the user's token, and live sockets that
// reconnect by themselves.

const TOKEN_KEY = 'city.jwt';

/** An error the API answered (`{error, detail?|message?, field?}`), or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail ? `${code}: ${detail}` : code);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

/** The stored JWT, if any. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Stores a JWT for this tab. */
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** The claims of a JWT (unverified: the bridge verifies), or null if it is not one or has expired. */
export function claims(jwt) {
  const parts = (jwt || '').split('.');
  if (parts.length !== 3) return null;
  try {
    const json = atob(parts[1].replace(/-/g, '+').replace(/_/g, '/'));
    const bytes = Uint8Array.from(json, (c) => c.charCodeAt(0));
    const value = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof value.sub !== 'string') return null;
    if (typeof value.exp === 'number' && value.exp * 1000 < Date.now()) return null;
    return value;
  } catch {
    return null;
  }
}

/** Calls the API; the JSON answer, or throws an `ApiError`. */
export async function api(method, path, body, { idempotencyKey } = {}) {
  const headers = { Accept: 'application/json' };
  const jwt = token();
  if (jwt) headers.Authorization = `Bearer ${jwt}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(0, 'network', error.message);
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const code = json?.error ?? `http_${response.status}`;
    const detail = json?.message ?? json?.detail ?? (json?.field ? `field ${json.field}` : '');
    throw new ApiError(response.status, code, detail);
  }
  return json;
}

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 8000;
const PING_EVERY_MS = 25000;

/**
 * A WebSocket that reconnects with exponential back-off (and jitter) until stopped.
 * `onState` gets `connecting`, `live`, `offline` or `removed` (closed with 4003: not retried); `onOpen` runs on every (re)connection,
 * `onFrame` with each JSON frame.
 */
export class LiveSocket {
  constructor(url, { onFrame, onState, onOpen }) {
    this.url = url;
    this.onFrame = onFrame;
    this.onState = onState;
    this.onOpen = onOpen;
    this.attempt = 0;
    this.stopped = true;
    this.ws = null;
    this.timer = null;
    this.pinger = null;
    this.retryNow = () => {
      if (!this.stopped && !this.ws) {
        clearTimeout(this.timer);
        this.connect();
      }
    };
  }

  start() {
    this.stopped = false;
    window.addEventListener('online', this.retryNow);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.retryNow);
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000);
    this.onState('idle');
  }

  connect() {
    this.onState('connecting');
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${scheme}//${location.host}${this.url()}`);
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      this.onState('live');
      this.pinger = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send('ping'), PING_EVERY_MS);
      this.onOpen?.();
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws || event.data === 'pong') return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.onFrame(frame);
    };
    ws.onclose = (event) => {
      clearInterval(this.pinger);
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      // 4003: the rights this socket rested on are gone (left, kicked, banned): no retry.
      if (event.code === 4003) {
        this.stopped = true;
        window.removeEventListener('online', this.retryNow);
        this.onState('removed');
        return;
      }
      // 4001 (the token expired) comes here too: the state's handler signs out.
      this.onState('offline');
      // The state's handler may have stopped it (a token that expired).
      if (this.stopped) return;
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt) * (0.75 + Math.random() / 2);
      this.attempt += 1;
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }
}
