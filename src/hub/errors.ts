import { InputError, NetworkError, SplintError } from "../util/errors.ts";
import { networkReason } from "../util/net.ts";

/**
 * Turns a failed Hub response into a message a user can act on, reading the `X-Error-Code` and
 * `X-Error-Message` headers the Hub sets (the same ones Python's `hf_raise_for_status` reads).
 * `what` names the repo, or repo/file, the request was about.
 */
export async function hubResponseError(response: Response, what: string, hasToken: boolean): Promise<SplintError> {
  const code = response.headers.get("x-error-code") ?? "";
  const serverMessage = response.headers.get("x-error-message") ?? (await bodyMessage(response));
  const detail = serverMessage ? ` (server: ${serverMessage})` : "";
  const tokenHint = hasToken
    ? "check that the token in HF_TOKEN has read access to this repo"
    : "if the repo is private or gated, set HF_TOKEN to a token with access (https://huggingface.co/settings/tokens)";
  if (response.status === 401 && /invalid credentials/i.test(serverMessage)) {
    return new InputError("HF_TOKEN", `the Hub rejected the token (401)${detail}`, "create a new token at https://huggingface.co/settings/tokens");
  }
  if (code === "GatedRepo" || (response.status === 403 && /gated/i.test(serverMessage))) {
    return new InputError(what, `gated repo: access not granted (${response.status})${detail}`, `accept the model's conditions on its Hub page with the account of HF_TOKEN; ${tokenHint}`);
  }
  if (code === "RevisionNotFound") return new InputError(what, `no such revision (${response.status})${detail}`);
  if (code === "EntryNotFound") return new InputError(what, `no such file in the repo (${response.status})${detail}`);
  if (response.status === 401 || response.status === 403 || code === "RepoNotFound") {
    return new InputError(what, `repository not found or not accessible (${response.status})${detail}`, tokenHint);
  }
  if (response.status === 404) return new InputError(what, `not found on the Hub (404)${detail}`, "check the repo id, revision and file name");
  const message = `${what}: the Hub answered ${response.status} ${response.statusText}${detail}`;
  if (response.status >= 500 || response.status === 429) return new NetworkError(message, "the Hub is having trouble; try again later");
  return new SplintError(message, "try again later; if it persists check HF_ENDPOINT");
}

async function bodyMessage(response: Response): Promise<string> {
  try {
    const text = await response.text();
    try {
      const json = JSON.parse(text) as { error?: unknown };
      if (typeof json.error === "string") return json.error;
    } catch {
      // not JSON: use the text itself
    }
    return text.slice(0, 200).trim();
  } catch {
    return "";
  }
}

/** A request that never got an answer (DNS, refused, reset, TLS). */
export function networkError(url: string, error: unknown): SplintError {
  if (error instanceof SplintError) return error;
  const reason = networkReason(error);
  return new NetworkError(
    `cannot reach ${new URL(url).origin} (${reason})`,
    "check the network connection and HF_ENDPOINT; to use models already in the cache, set HF_HUB_OFFLINE=1",
  );
}
