/**
 * Colour for a person at a terminal, and only then: never when NO_COLOR is set to anything
 * non-empty (https://no-color.org), when TERM is "dumb", or when the stream is not a TTY (a pipe
 * or a file gets plain text). FORCE_COLOR is deliberately not read: node's test runner sets it for
 * the processes it starts, and error text that scripts match must not change with who runs them.
 */
export function colorEnabled(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== "") return false;
  if (env.TERM === "dumb") return false;
  return stream.isTTY === true;
}

const CODES = { red: [31, 39], yellow: [33, 39], dim: [2, 22], bold: [1, 22] } as const;
export type Style = keyof typeof CODES;

/** `text` wrapped in the SGR codes of `style` when `enabled`, else unchanged. */
export function paint(text: string, style: Style, enabled: boolean): string {
  if (!enabled) return text;
  const [on, off] = CODES[style];
  return `\u001b[${on}m${text}\u001b[${off}m`;
}
