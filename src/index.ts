/**
 * splint as a library: the functions the `splint` commands call, for use from TypeScript or
 * JavaScript (`import { runTraining } from "splint"`). Every function that takes a model or an
 * adapter takes a local folder or a Hub id (`owner/name[@revision]`), downloaded into the cache
 * Python's huggingface_hub shares. Functions that report progress take an `Output`: pass
 * `plainOutput` for log lines on stderr, or your own implementation to route them elsewhere.
 * Failures the caller can fix throw `InputError` (naming the file or setting) or `SplintError`.
 *
 * The typical flow, as `splint demo` runs it:
 *   importImageFolder → runTraining → runEvaluation → predictImages (→ mergeAdapter, writeRunReport)
 */

// Reporting and errors
export { plainOutput, silentProgress, type Output, type Progress } from "./util/output.ts";
export { InputError, SplintError } from "./util/errors.ts";

// Hugging Face Hub: models and adapters by id, in the shared cache
export { parseHubRef, resolveDatasetRef, resolveModel, resolveModelRef, type ResolvedModel } from "./hub/resolve.ts";
export { DATASET_INCLUDE, DEFAULT_EXCLUDE, DEFAULT_INCLUDE, downloadSnapshot, type DownloadOptions, type Snapshot } from "./hub/snapshot.ts";
export type { RepoType } from "./hub/cache.ts";
export { hubSettings, type HubSettings } from "./hub/settings.ts";
export { pushAdapterToHub, type PushOptions, type PushResult } from "./hub/upload.ts";

// Load a model
export { openModelSession, type ModelSession, type ModelSessionOptions } from "./models/mistral3/runtime.ts";
export { freeMistral3, loadMistral3, type LoadModelOptions, type Mistral3Model } from "./models/mistral3/model.ts";
export { initTinyModel, PRESETS as TINY_MODEL_PRESETS, type InitResult, type TinyPreset } from "./models/mistral3/init.ts";
export { detectBackend, type BackendChoice, type BackendPreference } from "./backends/cuda/detect.ts";
export { createCpuBackend } from "./backends/cpu/index.ts";
export type { Backend, MatmulPrecision } from "./tensor/backend.ts";

// Import, synthesise, inspect and audit a dataset
export { importFromKaggle, importImageFolder, type ImportOptions, type ImportSummary, type KaggleImportOptions } from "./data/import.ts";
export { loadDatasetDict, saveDatasetDict, type DatasetFormat } from "./data/hf-dataset.ts";
export { loadDataset, type LoadedDataset } from "./data/load-dataset.ts";
export type { DatasetDict, DatasetRow, ImageCell } from "./data/types.ts";
export { synthesizeDatasetDict, writeSyntheticDataset, type SynthOptions, type SynthSummary } from "./data/synth.ts";
export { computeDatasetStats, type DatasetStats } from "./data/stats.ts";
export { auditDataset, dedupeDataset, type AuditOptions, type AuditReport } from "./data/audit.ts";

// Train
export { runTraining, type RunTrainingOptions, type TrainResult } from "./train/run.ts";
export { readConfigFile, resolveConfig, TUTORIAL_DEFAULTS, type TrainConfig } from "./train/config.ts";
export type { StepRecord } from "./train/trainer.ts";

// Evaluate, calibrate, compare, predict
export { runEvaluation, type EvalOptions, type EvalRun } from "./eval/evaluate.ts";
export { EVAL_MODES, type EvalMode } from "./eval/classify.ts";
export type { EvalSummary, Prediction } from "./eval/records.ts";
export { runCalibration, type CalibrateOptions } from "./eval/calibrate.ts";
export { compareEvalDirs } from "./eval/compare-dirs.ts";
export type { Comparison } from "./eval/compare.ts";
export { predictImages, resolveClassNames, UNCERTAIN, type ImagePrediction, type PredictOptions } from "./eval/predict.ts";

// Merge an adapter, write the report, run a recipe
export { mergeAdapter, type MergeOptions, type MergeResult } from "./lora/merge.ts";
export { writeRunReport, type ReportSummary } from "./report/report.ts";
export { readRecipe, type Recipe } from "./demo/recipe.ts";
export { runRecipe, STEPS as RECIPE_STEPS, type RunRecipeOptions, type RunRecipeResult, type Step as RecipeStep } from "./demo/pipeline.ts";
