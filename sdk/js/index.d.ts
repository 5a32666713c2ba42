// Types of `sluice-sdk`: what a plug-in sees and returns.

/** An exact decimal number: `units / 10^scale`, at most 18 places. */
export class Decimal {
  constructor(text: string | number);
  readonly units: bigint;
  readonly scale: number;
  static fromParts(units: bigint | number, scale: number): Decimal;
  format(): string;
  toNumber(): number;
  equals(other: unknown): boolean;
}
/** An amount of money: a decimal the host stores as `money`. */
export class Money extends Decimal {}
/** The value of a choice attribute (Dataverse's OptionSetValue). */
export class OptionSet {
  constructor(value: number);
  readonly value: number;
}
/** A reference to another record (a lookup). */
export class EntityReference {
  constructor(entity: string, id: string, name?: string);
  entity: string;
  id: string;
  name?: string;
}

/** A record value; integers past 2^53 are bigints, dates have millisecond precision. */
export type Value = null | string | number | bigint | boolean | Decimal | Money | Date | OptionSet | EntityReference;
export type Attributes = Record<string, Value>;

export class Entity {
  constructor(logicalName: string, id: string, attributes?: Attributes);
  logicalName: string;
  id: string;
  attributes: Attributes;
  get(name: string): Value;
}

export type Stage = 'pre-validation' | 'pre-operation' | 'post-operation';
export type Mode = 'synchronous' | 'asynchronous';

/** The execution context of one run (Dataverse's IPluginExecutionContext). */
export interface Context {
  orgId: string;
  userId: string;
  /** `Create`, `Update`, `Delete` or a custom message name. */
  message: string;
  entity: string;
  recordId: string | null;
  stage: Stage;
  mode: Mode;
  depth: number;
  correlationId: string;
  inputParameters: Attributes;
  /** The record being written, as the caller sent it (Create, Update). */
  target: Entity | null;
  preImage: Entity | null;
  postImage: Entity | null;
  sharedVariables: Attributes;
  /** The record the step is about: before the operation the Target; after it the
   * post-image, or the Target when there is none. */
  record: Entity | null;
}

export class Output {
  constructor(parameters?: Attributes);
  outputParameters: Attributes;
  sharedVariables: Attributes;
  set(name: string, value: Value): this;
  /** Passes a value on to later steps of the same event or workflow. */
  share(name: string, value: Value): this;
}

export class PluginError extends Error {}
/** A business rule failed: the job fails at once, is never retried, the message reaches the caller. */
export class BusinessError extends PluginError {}
/** Something that may succeed later: the job is retried. Any other thrown value becomes one. */
export class TransientError extends PluginError {}
export class RecordError extends Error {}
export class RecordNotFound extends RecordError {}
export class InvalidRecordCall extends RecordError {}

export type Operator = 'equal' | 'not-equal' | 'greater-than' | 'greater-equal' | 'less-than' | 'less-equal' | 'is-null' | 'is-not-null';
export interface Condition {
  attribute: string;
  operator: Operator;
  value: Value;
}
export function condition(attribute: string, operator: Operator, value?: Value): Condition;

export const records: {
  create(entity: string, attributes: Attributes): string;
  retrieve(entity: string, id: string, columns?: string[]): Entity;
  update(entity: string, id: string, attributes: Attributes): void;
  delete(entity: string, id: string): void;
  query(entity: string, options?: { where?: Condition[]; columns?: string[]; top?: number }): Entity[];
};
export function trace(message: string): void;
export const config: { unsecure(): string | null; secure(): string | null };

export interface Handler {
  execute(context: unknown): unknown;
  /** The function given to `plugin`, for the local harness. */
  run(context: Context): Output | void | Promise<Output | void>;
}
/** The plug-in's `handler` export: `export const handler = plugin((ctx) => ...)`; an
 * async function (one that awaits `fetch`) is run to completion. */
export function plugin(execute: (context: Context) => Output | void | Promise<Output | void>): Handler;

export function fromJson(value: unknown): Value;
export function toJson(value: Value): unknown;
