/**
 * Chat templates rendered with @huggingface/jinja, with the context transformers'
 * `apply_chat_template` gives: messages, add_generation_prompt and the tokenizer's special-token
 * strings. Jinja's built-ins raise_exception and strftime_now come from the library (passing them
 * in the context is an error there).
 */
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { Environment, Interpreter, Template } from "@huggingface/jinja";
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
      const budget = { left: MAX_RANGE_ITEMS };
      let text: string;
      try {
        text = renderBounded(template, {
          ...ctx.extra,
          messages: ctx.messages,
          add_generation_prompt: ctx.addGenerationPrompt,
          bos_token: ctx.bosToken,
          eos_token: ctx.eosToken,
        }, (...args: unknown[]) => boundedRange(args, budget, source));
      } catch (e) {
        if (e instanceof SplintError) throw e;
        // V8 throws RangeError for strings or arrays past its limits ("a" * 10**10).
        throw new InputError(source, `chat template ${name} failed to render: ${(e as Error).message}`);
      }
      if (text.length > MAX_RENDERED_CHARS) {
        throw new InputError(source, `chat template ${name} rendered ${text.length} characters, more than ${MAX_RENDERED_CHARS}; a chat prompt is never that long`);
      }
      return text;
    },
  };
}

/**
 * A template is a program from a file: `range(1000000000)` would build a billion-element array
 * and crash V8 (out of memory), and nested loops over large ranges would run for hours. Every
 * range() of one render draws from this many items; real chat templates use a handful.
 */
const MAX_RANGE_ITEMS = 100_000;
const MAX_RENDERED_CHARS = 10_000_000;

/**
 * Template.render with its globals, except that range() is ours: the library declares its own in
 * the same environment and refuses a second declaration, so the environment is built here.
 */
function renderBounded(template: Template, items: Record<string, unknown>, range: (...args: unknown[]) => number[]): string {
  const env = new Environment();
  const globals: Record<string, unknown> = {
    false: false,
    true: true,
    none: null,
    False: false,
    True: true,
    None: null,
    raise_exception: (message: unknown) => {
      throw new Error(String(message));
    },
    // The library's own strftime_now, reached through a template of one call.
    strftime_now: (format: unknown) => STRFTIME.render({ format: String(format) }),
    range,
  };
  for (const [key, value] of Object.entries({ ...globals, ...items })) env.set(key, value);
  const result = new Interpreter(env).run(template.parsed);
  return String(result.value);
}

const STRFTIME = new Template("{{ strftime_now(format) }}");

/** Python's range(stop) / range(start, stop[, step]) over integers, refused past the budget. */
function boundedRange(args: readonly unknown[], budget: { left: number }, source: string): number[] {
  const ints = args.map((a) => {
    if (typeof a !== "number" || !Number.isInteger(a)) throw new InputError(source, `chat template calls range() with ${JSON.stringify(a)}, which is not an integer`);
    return a;
  });
  if (ints.length < 1 || ints.length > 3) throw new InputError(source, `chat template calls range() with ${ints.length} arguments (1 to 3 expected)`);
  const [start, stop, step] = ints.length === 1 ? [0, ints[0]!, 1] : [ints[0]!, ints[1]!, ints[2] ?? 1];
  if (step === 0) throw new InputError(source, "chat template calls range() with step 0");
  const count = Math.max(0, Math.ceil((stop - start) / step));
  if (count > budget.left) {
    throw new InputError(source, `chat template asks range() for ${count} items; more than ${MAX_RANGE_ITEMS} in one render is refused (a template that would exhaust memory or time)`);
  }
  budget.left -= count;
  return Array.from({ length: count }, (_, i) => start + i * step);
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
