import { homedir } from "node:os";
import { join } from "node:path";
import { readSecretFile } from "../util/secret-file.ts";

/** Where the Hub is and how to talk to it, read the way Python's huggingface_hub reads it. */
export interface HubSettings {
  /** Base URL without a trailing slash (`HF_ENDPOINT`, default https://huggingface.co). */
  readonly endpoint: string;
  /** `HF_TOKEN`, else the token file `hf auth login` writes (`$HF_HOME/token`). */
  readonly token: string | undefined;
  /** `HF_HUB_OFFLINE`: use only what is in the cache. */
  readonly offline: boolean;
  /** The hub cache folder holding `models--owner--name` folders. */
  readonly cacheDir: string;
}

export const DEFAULT_ENDPOINT = "https://huggingface.co";

function expandHome(path: string): string {
  return path === "~" || path.startsWith("~/") ? join(homedir(), path.slice(1)) : path;
}

/** huggingface_hub's `_is_true`: "1", "ON", "YES", "TRUE" in any case. */
function isTrue(value: string | undefined): boolean {
  return value !== undefined && ["1", "ON", "YES", "TRUE"].includes(value.trim().toUpperCase());
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}

export function hubSettings(env: NodeJS.ProcessEnv = process.env): HubSettings {
  const hfHome = expandHome(nonEmpty(env.HF_HOME) ?? join(nonEmpty(env.XDG_CACHE_HOME) ?? join(homedir(), ".cache"), "huggingface"));
  const cacheDir = expandHome(nonEmpty(env.HF_HUB_CACHE) ?? nonEmpty(env.HUGGINGFACE_HUB_CACHE) ?? join(hfHome, "hub"));
  const endpoint = (nonEmpty(env.HF_ENDPOINT) ?? DEFAULT_ENDPOINT).replace(/\/+$/, "");
  return { endpoint, token: nonEmpty(env.HF_TOKEN) ?? readTokenFile(expandHome(nonEmpty(env.HF_TOKEN_PATH) ?? join(hfHome, "token"))), offline: isTrue(env.HF_HUB_OFFLINE), cacheDir };
}

function readTokenFile(path: string): string | undefined {
  // Python's `hf auth login` writes this file with the umask (often 0644), so only a file others
  // could write (and so swap the token for theirs) is refused.
  return nonEmpty(readSecretFile(path, { what: "Hugging Face token", forbiddenMode: 0o022 }) ?? undefined);
}
