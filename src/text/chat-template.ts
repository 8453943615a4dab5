/**
 * Chat templates rendered with @huggingface/jinja, with the context transformers'
 * `apply_chat_template` gives: messages, add_generation_prompt and the tokenizer's special-token
 * strings. Jinja's built-ins raise_exception and strftime_now come from the library (passing them
 * in the context is an error there).
 */
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { Template } from "@huggingface/jinja";
import { InputError, SplintError } from "../util/errors.ts";
import type { ChatMessage } from "./prompt.ts";

/** The tutorial's SHORT_VLM_TEMPLATE (§7), verbatim. */
export const SHORT_VLM_TEMPLATE = `{{ bos_token }}[INST]
{% for message in messages if message['role'] == 'user' -%}
{%- for content in message['content'] -%}
{%- if content['type'] == 'text' -%}
{{ content['text'] }}
{%- elif content['type'] == 'image' -%}
[IMG]
{%- endif -%}
{%- endfor -%}
{%- endfor -%}
[/INST]{% if not add_generation_prompt %}
{%- for message in messages if message['role'] == 'assistant' -%}
{{ message['content'][0]['text'] }}{{ eos_token }}
{%- endfor -%}
{%- endif %}`;

export interface RenderContext {
  messages: readonly ChatMessage[];
  addGenerationPrompt: boolean;
  bosToken: string;
  eosToken: string;
  /** More variables some templates read (pad_token, unk_token, tools…). */
  extra?: Record<string, unknown>;
}

export interface ChatTemplate {
  /** "model", "short" or the file the template came from. */
  readonly name: string;
  /** Where its text came from (file path, or "built-in"). */
  readonly source: string;
  readonly text: string;
  render(ctx: RenderContext): string;
}

export function compileChatTemplate(name: string, source: string, text: string): ChatTemplate {
  let template: Template;
  try {
    template = new Template(text);
  } catch (e) {
    throw new InputError(source, `chat template does not parse: ${(e as Error).message}`);
  }
  return {
    name,
    source,
    text,
    render(ctx) {
      try {
        return template.render({
          ...ctx.extra,
          messages: ctx.messages,
          add_generation_prompt: ctx.addGenerationPrompt,
          bos_token: ctx.bosToken,
          eos_token: ctx.eosToken,
        });
      } catch (e) {
        throw new SplintError(`chat template ${name} (${source}) failed: ${(e as Error).message}`);
      }
    },
  };
}

function readJsonObject(file: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new InputError(file, `cannot read JSON: ${(e as Error).message}`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new InputError(file, "not a JSON object");
  return v as Record<string, unknown>;
}

/** tokenizer_config.json holds one template as a string or several as [{name, template}]. */
function templateFromConfigValue(file: string, value: unknown): string {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const named = value.find(
      (t): t is { name: string; template: string } =>
        typeof t === "object" && t !== null && t.name === "default" && typeof t.template === "string",
    );
    if (named) return named.template;
  }
  throw new InputError(file, "chat_template is neither a string nor a list holding a 'default' template");
}

/**
 * The checkpoint's own template, looked up where transformers saves it: chat_template.jinja,
 * chat_template.json, then tokenizer_config.json's chat_template.
 */
export function loadModelChatTemplate(modelDir: string): ChatTemplate {
  const jinja = join(modelDir, "chat_template.jinja");
  if (existsSync(jinja)) return compileChatTemplate("model", jinja, readFileSync(jinja, "utf8"));
  for (const name of ["chat_template.json", "tokenizer_config.json"]) {
    const file = join(modelDir, name);
    if (!existsSync(file)) continue;
    const json = readJsonObject(file);
    if (json.chat_template !== undefined) {
      return compileChatTemplate("model", file, templateFromConfigValue(file, json.chat_template));
    }
  }
  throw new InputError(
    modelDir,
    "has no chat template (chat_template.jinja, chat_template.json or tokenizer_config.json)",
    "use --template short for the tutorial's template, or --template FILE",
  );
}

/** `--template model|short|FILE`. */
export function resolveChatTemplate(spec: string, modelDir: string): ChatTemplate {
  if (spec === "model") return loadModelChatTemplate(modelDir);
  if (spec === "short") return compileChatTemplate("short", "built-in", SHORT_VLM_TEMPLATE);
  const file = resolve(spec);
  if (!existsSync(file)) {
    throw new InputError(spec, "no such template file", "--template takes model, short or a Jinja file");
  }
  return compileChatTemplate(file, file, readFileSync(file, "utf8"));
}
