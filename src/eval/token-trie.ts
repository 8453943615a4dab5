/**
 * The class answers as a prefix tree of token ids. Constrained decoding walks it: at each step
 * only a child of the current node may be chosen, so every walk ends on exactly one class.
 * Answers end with EOS, so one class name being a prefix of another still gives distinct leaves.
 */
export interface TrieNode {
  readonly children: Map<number, TrieNode>;
  /** The class whose answer ends here (a leaf), else -1. */
  readonly classIndex: number;
}

export function buildTokenTrie(answers: readonly (readonly number[])[]): TrieNode {
  const root: TrieNode = { children: new Map(), classIndex: -1 };
  answers.forEach((tokens, c) => {
    if (tokens.length === 0) throw new Error(`buildTokenTrie: answer ${c} has no tokens`);
    let node = root;
    tokens.forEach((token, i) => {
      const last = i === tokens.length - 1;
      let child = node.children.get(token);
      if (!child) {
        child = { children: new Map(), classIndex: last ? c : -1 };
        node.children.set(token, child);
      } else if (last || child.classIndex >= 0) {
        throw new Error(`buildTokenTrie: answer ${c} is a prefix of, or equal to, another answer`);
      }
      node = child;
    });
  });
  return root;
}

/** The child token with the highest logit. */
export function bestChild(node: TrieNode, logits: Float32Array, offset: number): number {
  let best = -1;
  let bestValue = -Infinity;
  for (const token of node.children.keys()) {
    const v = logits[offset + token]!;
    if (best < 0 || v > bestValue) {
      best = token;
      bestValue = v;
    }
  }
  if (best < 0) throw new Error("bestChild: a leaf has no children");
  return best;
}
