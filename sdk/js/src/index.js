// Write Sluice plug-ins in JavaScript.
//
//   import { plugin, Output, BusinessError, records, trace } from 'sluice-sdk';
//   export const handler = plugin((ctx) => {
//     if (!ctx.recordId) throw new BusinessError('this step runs on a record');
//     records.update('account', ctx.recordId, { accountnumber: 'ACC-1' });
//     return new Output({ accountnumber: 'ACC-1' });
//   });
//
// Build with `sluice-js build app.js -o app.wasm`; test with `sluice-sdk/testing` under
// `node --test`; run in the real sandbox with `sluice plugin run app.wasm --input ...`.

import { attributesFromWit, attributesToWit, check, same } from './values.js';

export { Decimal, Money, OptionSet, EntityReference, fromJson, toJson } from './values.js';

/** One record: its entity's logical name, its id and its attributes. */
export class Entity {
  constructor(logicalName, id, attributes = {}) {
    this.logicalName = logicalName;
    this.id = id;
    this.attributes = attributes;
  }
  get(name) {
    return this.attributes[name] ?? null;
  }
}

/** What a successful run returns: output parameters and shared variables. */
export class Output {
  constructor(parameters = {}) {
    this.outputParameters = {};
    this.sharedVariables = {};
    for (const [name, value] of Object.entries(parameters)) this.set(name, value);
  }
  set(name, value) {
    this.outputParameters[name] = check(value);
    return this;
  }
  /** Passes a value on to later steps of the same event or workflow. */
  share(name, value) {
    this.sharedVariables[name] = check(value);
    return this;
  }
}

/** A failure the plug-in reports on purpose. */
export class PluginError extends Error {}
/** A business rule failed: the job fails at once, is never retried, and the message reaches the caller. */
export class BusinessError extends PluginError {
  name = 'BusinessError';
}
/** Something that may succeed later: the job is retried. Any other thrown value is reported as one. */
export class TransientError extends PluginError {
  name = 'TransientError';
}
/** A record call the host refused. */
export class RecordError extends Error {}
export class RecordNotFound extends RecordError {
  name = 'RecordNotFound';
}
export class InvalidRecordCall extends RecordError {
  name = 'InvalidRecordCall';
}

/** How an unexpected thrown value reads in the job's error: its name and message. */
export function describe(error) {
  if (error instanceof Error) return error.message ? `${error.name}: ${error.message}` : error.name;
  return `thrown: ${typeof error === 'string' ? error : JSON.stringify(error) ?? String(error)}`;
}

/** Which failure a thrown value is: [kind, message], as the job records it. */
export function failureOf(error) {
  if (error instanceof BusinessError) return ['business', error.message];
  if (error instanceof TransientError) return ['transient', error.message];
  return ['transient', describe(error)];
}

export const OPERATORS = ['equal', 'not-equal', 'greater-than', 'greater-equal', 'less-than', 'less-equal', 'is-null', 'is-not-null'];

/** `attribute operator value`; `is-null` and `is-not-null` take no value. */
export function condition(attribute, operator, value = null) {
  if (!OPERATORS.includes(operator)) throw new TypeError(`unknown operator '${operator}': one of ${OPERATORS.join(', ')}`);
  return { attribute, operator, value: check(value) };
}

// The host serving the calls below: the component's imports (set by `sluice-sdk/component`
// in a build) or the local harness (`sluice-sdk/testing`).
let host = null;
export function useHost(next) {
  const previous = host;
  host = next;
  return previous;
}
function current() {
  if (!host) throw new Error("no host: call this from a plug-in's run (or sluice-sdk/testing's run)");
  return host;
}
const checked = (attributes) => Object.fromEntries(Object.entries(attributes).map(([k, v]) => [k, check(v)]));

/** The organisation's records; failures throw RecordNotFound or InvalidRecordCall. */
export const records = {
  create: (entity, attributes) => current().create(entity, checked(attributes)),
  retrieve: (entity, id, columns = []) => current().retrieve(entity, id, [...columns]),
  update: (entity, id, attributes) => current().update(entity, id, checked(attributes)),
  delete: (entity, id) => current().delete(entity, id),
  query: (entity, { where = [], columns = [], top = undefined } = {}) => current().query(entity, [...columns], [...where], top),
};

/** Adds a line to the run's trace log. */
export const trace = (message) => current().trace(String(message));

/** The configuration of the step registration running this plug-in. */
export const config = {
  unsecure: () => current().unsecureConfig() ?? null,
  secure: () => current().secureConfig() ?? null,
};

export function entityFromWit(e) {
  return e == null ? null : new Entity(e.logicalName, e.id, attributesFromWit(e.attributes));
}

/** Adds `record`: the record the step is about, as Dataverse hands it (before the
 * operation the Target; after it the post-image, or the Target when there is none). */
export function withRecord(context) {
  context.record = context.stage === 'post-operation' ? (context.postImage ?? context.target) : context.target;
  return context;
}

export function contextFromWit(c) {
  return withRecord({
    orgId: c.orgId,
    userId: c.userId,
    message: c.message,
    entity: c.entity,
    recordId: c.recordId ?? null,
    stage: c.stage,
    mode: c.mode,
    depth: c.depth,
    correlationId: c.correlationId,
    inputParameters: attributesFromWit(c.inputParameters),
    target: entityFromWit(c.target),
    preImage: entityFromWit(c.preImage),
    postImage: entityFromWit(c.postImage),
    sharedVariables: attributesFromWit(c.sharedVariables),
  });
}

/** Checks what a plug-in function returned: an Output (or nothing). */
export function outputOf(returned) {
  if (returned === undefined || returned === null) return new Output();
  if (!(returned instanceof Output)) throw new TypeError(`a plug-in returns an Output, not ${returned?.constructor?.name ?? typeof returned}`);
  return returned;
}

/**
 * The plug-in's `handler` export around `execute(ctx)`. A BusinessError fails the job;
 * any other thrown value is a transient error that keeps its message (never a bare trap).
 */
export function plugin(execute) {
  const toWit = (returned) => {
    const output = outputOf(returned);
    return { outputParameters: attributesToWit(output.outputParameters), sharedVariables: attributesToWit(output.sharedVariables) };
  };
  const fail = (error) => {
    const [tag, val] = failureOf(error);
    throw { tag, val };
  };
  return {
    // An async function (one that awaits `fetch`) returns a promise: the runtime runs
    // its event loop until the promise settles.
    execute(witContext) {
      try {
        const returned = execute(contextFromWit(witContext));
        return typeof returned?.then === 'function' ? returned.then(toWit, fail) : toWit(returned);
      } catch (error) {
        fail(error);
      }
    },
    run: execute,
  };
}

export { same };
