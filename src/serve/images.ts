import { ApiError } from "./openai-schema.ts";

/**
 * Image URLs of a request → encoded image bytes. data: URLs always; http(s) URLs only when the
 * server was started with --allow-remote-images, because fetching arbitrary URLs on a client's
 * behalf lets anyone who can reach the server make it request hosts on its own network.
 */
export interface ImageFetchOptions {
  readonly allowRemote: boolean;
  /** Largest image accepted, in bytes (after base64 decoding). */
  readonly maxBytes: number;
  /** How long a remote fetch may take. */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

const DATA_URL = /^data:([a-z0-9.+-]+\/[a-z0-9.+-]+)?((?:;[a-z0-9-]+=[^;,]*)*)(;base64)?,/i;

export async function fetchImage(url: string, param: string, opts: ImageFetchOptions): Promise<Uint8Array> {
  if (url.startsWith("data:")) return decodeDataUrl(url, param, opts.maxBytes);
  if (/^https?:\/\//i.test(url)) {
    if (!opts.allowRemote) throw new ApiError(400, "http(s) image URLs are off on this server; send the image as a data: URL (or start splint serve with --allow-remote-images)", "invalid_request_error", param, "remote_images_disabled");
    return fetchRemote(url, param, opts);
  }
  throw new ApiError(400, `unsupported image URL ${JSON.stringify(url.slice(0, 40))}: expected a data: URL`, "invalid_request_error", param);
}

export function decodeDataUrl(url: string, param: string, maxBytes: number): Uint8Array {
  const m = DATA_URL.exec(url);
  if (!m) throw new ApiError(400, "malformed data: URL (expected data:image/png;base64,…)", "invalid_request_error", param);
  if (m[1] && !m[1].toLowerCase().startsWith("image/")) throw new ApiError(400, `the data: URL holds ${m[1]}, not an image`, "invalid_request_error", param);
  if (!m[3]) throw new ApiError(400, "the data: URL must be base64-encoded", "invalid_request_error", param);
  const payload = url.slice(m[0].length);
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(payload)) throw new ApiError(400, "the data: URL's base64 payload is not valid base64", "invalid_request_error", param);
  if ((payload.length * 3) / 4 > maxBytes + 3) throw tooLarge(param, maxBytes);
  const bytes = new Uint8Array(Buffer.from(payload, "base64"));
  if (bytes.byteLength === 0) throw new ApiError(400, "the data: URL holds no bytes", "invalid_request_error", param);
  return bytes;
}

async function fetchRemote(url: string, param: string, opts: ImageFetchOptions): Promise<Uint8Array> {
  const signal = opts.signal ? AbortSignal.any([opts.signal, AbortSignal.timeout(opts.timeoutMs)]) : AbortSignal.timeout(opts.timeoutMs);
  let response: Response;
  try {
    response = await fetch(url, { signal, redirect: "follow" });
  } catch (error) {
    throw new ApiError(400, `could not fetch the image (${(error as Error).message})`, "invalid_request_error", param, "image_fetch_failed");
  }
  if (!response.ok) throw new ApiError(400, `fetching the image gave HTTP ${response.status}`, "invalid_request_error", param, "image_fetch_failed");
  const declared = Number(response.headers.get("content-length") ?? "0");
  if (declared > opts.maxBytes) throw tooLarge(param, opts.maxBytes);
  // Read in chunks so that a server lying about (or omitting) its length cannot exhaust memory.
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = response.body?.getReader();
  if (!reader) throw new ApiError(400, "the image URL answered with no body", "invalid_request_error", param, "image_fetch_failed");
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > opts.maxBytes) {
      await reader.cancel();
      throw tooLarge(param, opts.maxBytes);
    }
    chunks.push(value);
  }
  return new Uint8Array(Buffer.concat(chunks));
}

function tooLarge(param: string, maxBytes: number): ApiError {
  return new ApiError(413, `the image is larger than this server's limit of ${(maxBytes / 2 ** 20).toFixed(1)} MiB`, "invalid_request_error", param, "image_too_large");
}
