/**
 * Learning-rate schedules as transformers' get_scheduler builds them. `step` is the number of
 * optimizer steps already taken, so the first update uses lr(0) — which is 0 under warmup, exactly
 * as the Hugging Face Trainer does.
 */
export type ScheduleKind = "linear" | "constant" | "cosine";

export function learningRate(kind: ScheduleKind, baseLr: number, step: number, warmupSteps: number, totalSteps: number): number {
  if (step < warmupSteps) return (baseLr * step) / Math.max(1, warmupSteps);
  const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
  switch (kind) {
    case "constant":
      return baseLr;
    case "linear":
      return baseLr * Math.max(0, (totalSteps - step) / Math.max(1, totalSteps - warmupSteps));
    case "cosine":
      return baseLr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
  }
}
