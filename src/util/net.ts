/**
 * fetch with the two timeouts every network read needs: one for the answer to start (connect, TLS
 * and headers) and one for the body to keep moving (a stalled connection sends nothing, forever,
 * and fetch alone would wait forever). A timeout aborts the request with a TimeoutError that names
 * which limit was hit, so callers can retry (resuming) or give a clear final message.
 */
import { NetworkError } from "./errors.ts";

export interface NetTimeouts {
  /** Milliseconds until the response headers must have arrived. */
  readonly connectMs: number;
  /** Milliseconds the body may go without a single byte. */
  readonly idleMs: number;
}

/** Defaults, overridable by SPLINT_CONNECT_TIMEOUT_S and SPLINT_IDLE_TIMEOUT_S (seconds). */
export function netTimeouts(env: NodeJS.ProcessEnv = process.env): NetTimeouts {
  return {
    connectMs: secondsFromEnv(env, "SPLINT_CONNECT_TIMEOUT_S", 30) * 1000,
    idleMs: secondsFromEnv(env, "SPLINT_IDLE_TIMEOUT_S", 60) * 1000,
  };
}

function secondsFromEnv(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const text = env[name];
  if (text === undefined || text.trim() === "") return fallback;
  const value = Number(text);
  // A bad value must not turn into "no timeout" (NaN) or an instant failure (0): use the default.
  return Number.isFinite(value) && value > 0 ? value : fallback;
}

/** How far the body is read ahead of its consumer. */
const BODY_BUFFER_BYTES = 8 * 1024 * 1024;

/** A request or body that exceeded one of the limits. */
export class TimeoutError extends Error {
  constructor(
    readonly phase: "connect" | "idle",
    readonly ms: number,
    readonly url: string,
  ) {
    super(phase === "connect" ? `no answer within ${ms / 1000} s` : `the connection stalled (no data for ${ms / 1000} s)`);
    this.name = "TimeoutError";
  }
}

export interface TimedFetchInit extends RequestInit {
  readonly timeouts?: NetTimeouts;
}

/**
 * fetch(url, init) with timeouts. The returned Response's body is a stream that errors with a
 * TimeoutError when no chunk arrives for idleMs; an external `init.signal` still aborts it.
 */
export async function timedFetch(url: string | URL, init: TimedFetchInit = {}): Promise<Response> {
  const { timeouts = netTimeouts(), signal: outer, ...rest } = init;
  const href = String(url);
  const controller = new AbortController();
  const forward = () => controller.abort(outer?.reason);
  if (outer?.aborted) forward();
  outer?.addEventListener("abort", forward, { once: true });
  let timedOut: TimeoutError | null = null;
  const expire = (phase: "connect" | "idle", ms: number) => {
    timedOut = new TimeoutError(phase, ms, href);
    controller.abort(timedOut);
  };
  const connectTimer = setTimeout(() => expire("connect", timeouts.connectMs), timeouts.connectMs);
  let response: Response;
  try {
    response = await fetch(url, { ...rest, signal: controller.signal });
  } catch (error) {
    outer?.removeEventListener("abort", forward);
    throw timedOut ?? error;
  } finally {
    clearTimeout(connectTimer);
  }
  if (!response.body) {
    outer?.removeEventListener("abort", forward);
    return response;
  }
  const reader = response.body.getReader();
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  const done = () => {
    clearTimeout(idleTimer);
    outer?.removeEventListener("abort", forward);
  };
  // Read from the socket as fast as it delivers (up to BODY_BUFFER_BYTES ahead of the consumer),
  // so that the idle timer measures the network, not a slow disk; and when the connection then
  // fails, hand over every byte that did arrive before the error, so a resumed download starts
  // after them instead of fetching them again.
  let failure: unknown = null;
  const body = new ReadableStream<Uint8Array>(
    {
      async pull(sink) {
        if (failure !== null) {
          if (sink.desiredSize === BODY_BUFFER_BYTES) sink.error(failure);
          return;
        }
        idleTimer = setTimeout(() => expire("idle", timeouts.idleMs), timeouts.idleMs);
        try {
          const chunk = await reader.read();
          clearTimeout(idleTimer);
          if (chunk.done) {
            done();
            sink.close();
          } else sink.enqueue(chunk.value);
        } catch (error) {
          done();
          failure = timedOut ?? error;
          if (sink.desiredSize === BODY_BUFFER_BYTES) sink.error(failure);
        }
      },
      async cancel(reason) {
        done();
        await reader.cancel(reason);
      },
    },
    new ByteLengthQueuingStrategy({ highWaterMark: BODY_BUFFER_BYTES }),
  );
  return wrapResponse(response, body);
}

/** The same response with another body; status, headers and url are kept. */
function wrapResponse(response: Response, body: ReadableStream<Uint8Array>): Response {
  const wrapped = new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
  Object.defineProperty(wrapped, "url", { value: response.url });
  Object.defineProperty(wrapped, "redirected", { value: response.redirected });
  return wrapped;
}

/** A `typeof fetch` with timeouts, for libraries that take a fetch implementation. */
export function fetchWithTimeouts(timeouts: NetTimeouts = netTimeouts()): typeof fetch {
  return (input, init) => {
    const url = typeof input === "string" || input instanceof URL ? input : input.url;
    const merged: TimedFetchInit = input instanceof Request ? { method: input.method, headers: input.headers, body: input.body, signal: input.signal, ...init, timeouts } : { ...init, timeouts };
    if (merged.body instanceof ReadableStream) (merged as RequestInit & { duplex?: string }).duplex = "half";
    return timedFetch(url, merged);
  };
}

/** True for failures a retry may cure: timeouts, resets, refused or dropped connections. */
export function isTransientNetworkError(error: unknown): boolean {
  if (error instanceof TimeoutError) return true;
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = (e as Error & { cause?: unknown }).cause, depth++) {
    if (e instanceof TimeoutError) return true;
    const code = (e as NodeJS.ErrnoException).code;
    if (code && ["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "EAI_AGAIN", "UND_ERR_SOCKET", "UND_ERR_CONNECT_TIMEOUT", "UND_ERR_HEADERS_TIMEOUT", "UND_ERR_BODY_TIMEOUT"].includes(code)) return true;
    if (e.message === "terminated" || e.message === "fetch failed") return true;
  }
  return false;
}

/**
 * Nothing listens there or the name does not resolve: retrying within seconds does not help, so
 * the user hears it at once.
 */
export function isUnreachable(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = (e as Error & { cause?: unknown }).cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code && ["ECONNREFUSED", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH"].includes(code)) return true;
  }
  return false;
}

/** Why a request failed, in a few words (the timeout, or the deepest error code). */
export function networkReason(error: unknown): string {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = (e as Error & { cause?: unknown }).cause, depth++) {
    if (e instanceof TimeoutError) return e.message;
  }
  let reason = error instanceof Error ? error.message : String(error);
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = (e as Error & { cause?: unknown }).cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code) reason = code;
  }
  return reason;
}

/** The final message after retries ran out: what was asked, of whom, why it failed. */
export function networkFailure(what: string, url: string, error: unknown, attempts: number, hint?: string): NetworkError {
  const host = safeOrigin(url);
  return new NetworkError(
    `${what}: network error talking to ${host} after ${attempts} attempt${attempts === 1 ? "" : "s"} (${networkReason(error)})`,
    hint ?? "check the network connection and run the same command again; downloads resume where they stopped",
  );
}

function safeOrigin(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return url;
  }
}

/** Waits ms milliseconds (retry back-off). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
