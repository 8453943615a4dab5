/**
 * The request and response shapes of the OpenAI chat-completions API as splint serves them, and the
 * validation that turns a request body into a typed request or an ApiError naming the bad field.
 * Validation is by hand (no schema library): the subset is small, and each message must say which
 * field is wrong in words a client author understands, as OpenAI's own errors do.
 */

export type ApiErrorType = "invalid_request_error" | "authentication_error" | "not_found_error" | "rate_limit_error" | "timeout_error" | "server_error";

/** An error answered with OpenAI's error shape: `{"error": {message, type, param, code}}`. */
export class ApiError extends Error {
  constructor(
    readonly status: 400 | 401 | 404 | 405 | 413 | 429 | 500 | 503 | 504,
    message: string,
    readonly type: ApiErrorType = "invalid_request_error",
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = "ApiError";
  }

  body(): OpenAIErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export interface OpenAIErrorBody {
  error: { message: string; type: ApiErrorType; param: string | null; code: string | null };
}

/** One part of a message: text, or an image by URL (a data: URL, or http(s) when the server allows it). */
export type ChatPart = { type: "text"; text: string } | { type: "image_url"; url: string };

export interface ChatRequestMessage {
  role: "system" | "user" | "assistant";
  parts: ChatPart[];
}

export interface ChatRequest {
  /** undefined: the server's default model. */
  model: string | undefined;
  messages: ChatRequestMessage[];
  stream: boolean;
  includeUsage: boolean;
  maxTokens: number | undefined;
  /** undefined: the model's generation_config.json decides; 0: greedy. */
  temperature: number | undefined;
  topP: number | undefined;
  /** Extension (vLLM has it too): keep the k most likely tokens when sampling. */
  topK: number | undefined;
  seed: number | undefined;
  stop: string[];
  /** Extension (vLLM's name): keep generating past end-of-sequence, up to max_tokens (benchmarks). */
  ignoreEos: boolean;
}

/** The classification extension, `POST /v1/classify`. */
export interface ClassifyRequest {
  model: string | undefined;
  /** A data: URL (or http(s) URL when allowed). */
  image: string;
  /** undefined: the server's class list. */
  classes: string[] | undefined;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function bad(message: string, param: string): ApiError {
  return new ApiError(400, message, "invalid_request_error", param);
}

function optionalNumber(body: Json, key: string, valid: (v: number) => boolean, rule: string): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || !valid(v)) throw bad(`'${key}' must be ${rule}, got ${JSON.stringify(v)}`, key);
  return v;
}

function optionalModel(body: Json): string | undefined {
  const model = body.model;
  if (model === undefined || model === null) return undefined;
  if (typeof model !== "string" || model === "") throw bad("'model' must be a non-empty string", "model");
  return model;
}

/** Fields whose meaning splint cannot honour: refused rather than silently ignored. */
const REFUSED: readonly [string, (v: unknown) => boolean, string][] = [
  ["n", (v) => v !== 1, "only n = 1 is supported"],
  ["tools", (v) => Array.isArray(v) && v.length > 0, "tool calls are not supported"],
  ["functions", (v) => Array.isArray(v) && v.length > 0, "function calls are not supported"],
  ["logprobs", (v) => v === true, "logprobs are not supported (use POST /v1/classify for class probabilities)"],
  ["response_format", (v) => !(isObject(v) && v.type === "text"), "only response_format {\"type\": \"text\"} is supported"],
];

export function parseChatRequest(raw: unknown): ChatRequest {
  if (!isObject(raw)) throw bad("the request body must be a JSON object", "body");
  for (const [key, refused, why] of REFUSED) {
    if (raw[key] !== undefined && raw[key] !== null && refused(raw[key])) throw bad(`'${key}': ${why}`, key);
  }
  if (!Array.isArray(raw.messages) || raw.messages.length === 0) throw bad("'messages' must be a non-empty array", "messages");
  const messages = raw.messages.map((m, i) => parseMessage(m, `messages[${i}]`));
  if (messages[messages.length - 1]!.role === "assistant") throw bad("the last message must not be the assistant's: there is nothing to answer", `messages[${messages.length - 1}].role`);
  if (raw.stream !== undefined && raw.stream !== null && typeof raw.stream !== "boolean") throw bad("'stream' must be a boolean", "stream");
  const options = raw.stream_options;
  if (options !== undefined && options !== null && !isObject(options)) throw bad("'stream_options' must be an object", "stream_options");
  const positiveInt = (v: number) => Number.isInteger(v) && v > 0;
  // Newer clients send max_completion_tokens; older ones max_tokens. Both mean the same here.
  const maxTokens = optionalNumber(raw, "max_completion_tokens", positiveInt, "a positive integer") ?? optionalNumber(raw, "max_tokens", positiveInt, "a positive integer");
  return {
    model: optionalModel(raw),
    messages,
    stream: raw.stream === true,
    includeUsage: isObject(options) && options.include_usage === true,
    maxTokens,
    temperature: optionalNumber(raw, "temperature", (v) => v >= 0 && v <= 2, "a number in [0, 2]"),
    topP: optionalNumber(raw, "top_p", (v) => v > 0 && v <= 1, "a number in (0, 1]"),
    topK: optionalNumber(raw, "top_k", (v) => Number.isInteger(v) && v >= 0, "a non-negative integer"),
    seed: optionalNumber(raw, "seed", (v) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff, "an integer in [0, 2^32)"),
    stop: parseStop(raw.stop),
    ignoreEos: parseFlag(raw, "ignore_eos"),
  };
}

function parseFlag(body: Json, key: string): boolean {
  const v = body[key];
  if (v === undefined || v === null) return false;
  if (typeof v !== "boolean") throw bad(`'${key}' must be a boolean`, key);
  return v;
}

function parseStop(stop: unknown): string[] {
  if (stop === undefined || stop === null) return [];
  const list = typeof stop === "string" ? [stop] : stop;
  if (!Array.isArray(list) || list.length > 4 || !list.every((s) => typeof s === "string" && s.length > 0)) {
    throw bad("'stop' must be a non-empty string or an array of up to 4 of them", "stop");
  }
  return list as string[];
}

function parseMessage(m: unknown, where: string): ChatRequestMessage {
  if (!isObject(m)) throw bad(`${where} must be an object`, where);
  const role = m.role;
  if (role !== "system" && role !== "user" && role !== "assistant") {
    throw bad(`${where}.role must be "system", "user" or "assistant", got ${JSON.stringify(role)}`, `${where}.role`);
  }
  const content = m.content;
  if (typeof content === "string") return { role, parts: [{ type: "text", text: content }] };
  if (!Array.isArray(content) || content.length === 0) throw bad(`${where}.content must be a string or a non-empty array of parts`, `${where}.content`);
  const parts = content.map((p, j): ChatPart => {
    const at = `${where}.content[${j}]`;
    if (!isObject(p)) throw bad(`${at} must be an object`, at);
    if (p.type === "text") {
      if (typeof p.text !== "string") throw bad(`${at}.text must be a string`, `${at}.text`);
      return { type: "text", text: p.text };
    }
    if (p.type === "image_url") {
      // OpenAI's shape is {image_url: {url}}; a bare string is accepted too, as vLLM does.
      const url = isObject(p.image_url) ? p.image_url.url : p.image_url;
      if (typeof url !== "string" || url === "") throw bad(`${at}.image_url.url must be a string`, `${at}.image_url.url`);
      if (role !== "user") throw bad(`${at}: images may only be in user messages`, at);
      return { type: "image_url", url };
    }
    throw bad(`${at}.type must be "text" or "image_url", got ${JSON.stringify(p.type)}`, `${at}.type`);
  });
  return { role, parts };
}

export function parseClassifyRequest(raw: unknown): ClassifyRequest {
  if (!isObject(raw)) throw bad("the request body must be a JSON object", "body");
  // The image as a string, or in the chat shape {url} / {image_url: {url}}, so clients can reuse theirs.
  const img = raw.image;
  const url = typeof img === "string" ? img : isObject(img) ? (isObject(img.image_url) ? img.image_url.url : img.url) : undefined;
  if (typeof url !== "string" || url === "") throw bad("'image' must be a data: URL (or an object with a url)", "image");
  let classes: string[] | undefined;
  if (raw.classes !== undefined && raw.classes !== null) {
    const c = raw.classes;
    if (!Array.isArray(c) || c.length < 2 || !c.every((x) => typeof x === "string" && x.trim() !== "")) throw bad("'classes' must be an array of at least two non-empty strings", "classes");
    if (new Set(c).size !== c.length) throw bad("'classes' must not repeat a name", "classes");
    classes = c as string[];
  }
  return { model: optionalModel(raw), image: url, classes };
}

// Responses ---------------------------------------------------------------------------------------

export type FinishReason = "stop" | "length";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** Extension: from the request's arrival to its first generated token, measured by the server. */
  time_to_first_token_ms?: number;
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: { index: 0; message: { role: "assistant"; content: string }; finish_reason: FinishReason; logprobs: null }[];
  usage: Usage;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: { index: 0; delta: { role?: "assistant"; content?: string }; finish_reason: FinishReason | null; logprobs: null }[];
  usage?: Usage | null;
}

export interface Classification {
  id: string;
  object: "classification";
  created: number;
  model: string;
  /** The most probable class. */
  class: string;
  /** Each class's probability, in the class list's order (they sum to one). */
  probabilities: Record<string, number>;
  /** The temperature applied to the scores (the adapter's calibration.json; 1 without). */
  temperature: number;
}

export interface ModelCard {
  id: string;
  object: "model";
  created: number;
  owned_by: "splint";
  /** Extension: "base" or "adapter", and the folder it was loaded from. */
  kind: "base" | "adapter";
  path: string;
}
