import type { Context, Entity, Handler, Output, Stage } from './index.js';

export interface Result {
  output: Output | null;
  /** [kind, message] as the job would record it, if the run failed. */
  error: ['business' | 'transient', string] | null;
  trace: string[];
  /** The record writes made, in order: [operation, entity, id]. */
  changes: ['create' | 'update' | 'delete', string, string][];
  records: FakeRecords;
}

export class FakeRecords {
  constructor(records?: Entity[]);
  get(entity: string, id: string): Entity | null;
  all(entity: string): Entity[];
}

export function contextFromJson(data: object): Context;
export function forStage(context: Context, stage?: Stage): Context;
/** Runs the plug-in once; a promise of the Result for an async plug-in. */
export function run(
  plugin: Handler | ((context: Context) => Output | void | Promise<Output | void>),
  context: Context | object | string | URL,
  options?: { records?: Entity[] | object[] | string | URL; config?: string | null; secureConfig?: string | null; stage?: Stage },
): Result;
