/**
 * PEFT's module-name patterns as JavaScript regexes. PEFT compiles them with Python's `re`, whose
 * syntax differs from JavaScript's in a few spellings that adapter configs do use: named groups
 * `(?P<name>…)` and back-references `(?P=name)`. Those are translated; anything JavaScript still
 * cannot compile is refused as bad input naming where the pattern came from, never an internal error.
 */
import { InputError } from "../util/errors.ts";

const compiled = new Map<string, RegExp>();

/** Python `re` spellings → JavaScript ones (only those with an exact equivalent). */
export function pythonRegexToJs(pattern: string): string {
  return pattern.replace(/\(\?P<([A-Za-z_]\w*)>/g, "(?<$1>").replace(/\(\?P=([A-Za-z_]\w*)\)/g, "\\k<$1>").replace(/\\A/g, "^").replace(/\\Z/g, "$");
}

/**
 * `pattern` anchored as `re.fullmatch` anchors it (or, with `suffix`, matched against the end of a
 * dotted module path, as PEFT's rank_pattern keys are). `where` names the file and field.
 */
export function modulePattern(pattern: string, where: string, options: { suffix?: boolean } = {}): RegExp {
  const source = options.suffix ? `^(?:.*\\.)?(?:${pythonRegexToJs(pattern)})$` : `^(?:${pythonRegexToJs(pattern)})$`;
  let regex = compiled.get(source);
  if (regex) return regex;
  try {
    regex = new RegExp(source);
  } catch (error) {
    throw new InputError(where, `${JSON.stringify(pattern)} is not a valid regular expression (${(error as Error).message.replace(/^Invalid regular expression: /, "")})`, "PEFT treats a string as a regex matched against the whole module name; give a list of names to match by suffix");
  }
  compiled.set(source, regex);
  return regex;
}

/**
 * Whether `spec` selects the module at `path`, exactly as PEFT's check_target_module_exists: a
 * string is a regex that must match the whole path; a list matches a path equal to one of its
 * names or ending in "." + one of them (so "q_proj" hits "…self_attn.q_proj" but not "…xq_proj").
 */
export function matchesModules(spec: readonly string[] | string, path: string, where: string): boolean {
  if (typeof spec === "string") return modulePattern(spec, where).test(path);
  return spec.some((target) => path === target || path.endsWith(`.${target}`));
}
