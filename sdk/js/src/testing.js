// Runs a plug-in's function locally, with fake records, for tests (node --test or any
// other runner). It reads the same JSON files as `sluice plugin run` (a context and a
// list of records) and applies the host's rules for what a step of each stage sees.
//
//   import { run } from 'sluice-sdk/testing';
//   import { handler } from './account-number.js';
//   const result = run(handler, 'account-create.json', { records: 'accounts.json', config: 'ACC' });
//   assert.equal(result.output.outputParameters.accountnumber, 'ACC-000042');

import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { Entity, InvalidRecordCall, Output, RecordNotFound, failureOf, outputOf, useHost, withRecord } from './index.js';
import { Decimal, attributesFromJson, check, compareDecimals, same } from './values.js';

const load = (source) => (typeof source === 'string' || source instanceof URL ? JSON.parse(readFileSync(source, 'utf8')) : source);

const entityFromJson = (e) => (e == null ? null : new Entity(e.logical_name, e.id, attributesFromJson(e.attributes)));

const CONTEXT_FIELDS = ['org_id', 'user_id', 'message', 'entity', 'record_id', 'stage', 'mode', 'depth', 'correlation_id', 'input_parameters', 'target', 'pre_image', 'post_image', 'shared_variables'];

/** A context from the JSON form `sluice plugin run --input` reads. */
export function contextFromJson(data) {
  const unknown = Object.keys(data).filter((k) => !CONTEXT_FIELDS.includes(k));
  if (unknown.length) throw new TypeError(`unknown context field(s): ${unknown.sort().join(', ')}`);
  for (const required of ['message', 'entity']) if (typeof data[required] !== 'string') throw new TypeError(`a context needs '${required}'`);
  return {
    orgId: data.org_id ?? 'local',
    userId: data.user_id ?? 'local',
    message: data.message,
    entity: data.entity,
    recordId: data.record_id ?? null,
    stage: data.stage ?? 'post-operation',
    mode: data.mode ?? 'asynchronous',
    depth: data.depth ?? 1,
    correlationId: data.correlation_id ?? randomUUID(),
    inputParameters: attributesFromJson(data.input_parameters),
    target: entityFromJson(data.target),
    preImage: entityFromJson(data.pre_image),
    postImage: entityFromJson(data.post_image),
    sharedVariables: attributesFromJson(data.shared_variables),
  };
}

/** The context as a step of `stage` sees it: before the operation there is no post-image
 * yet; a context that gives one is taken as the Target. */
export function forStage(context, stage = context.stage) {
  const seen = { ...context, stage };
  if (stage !== 'post-operation') {
    const postImage = seen.postImage;
    seen.postImage = null;
    if (!seen.target && seen.message !== 'Delete') seen.target = postImage;
  }
  return withRecord(seen);
}

function comparable(a, b) {
  const numeric = (v) => typeof v === 'number' || typeof v === 'bigint' || v instanceof Decimal;
  if (numeric(a) && numeric(b)) {
    const decimal = (v) => (v instanceof Decimal ? v : new Decimal(String(v)));
    return compareDecimals(decimal(a), decimal(b));
  }
  if (typeof a === 'string' && typeof b === 'string') return a < b ? -1 : a > b ? 1 : 0;
  if (a instanceof Date && b instanceof Date) return Math.sign(a - b);
  return null;
}

function meets(record, { attribute, operator, value }) {
  const actual = record.attributes[attribute] ?? null;
  if (operator === 'is-null') return actual === null;
  if (operator === 'is-not-null') return actual !== null;
  if (operator === 'equal') return same(actual, value);
  if (operator === 'not-equal') return !same(actual, value);
  const order = actual === null ? null : comparable(actual, value);
  if (order === null) return false;
  return { 'greater-than': order > 0, 'greater-equal': order >= 0, 'less-than': order < 0, 'less-equal': order <= 0 }[operator];
}

/** An organisation's records in memory, with the host's record semantics. */
export class FakeRecords {
  #records = new Map();
  constructor(records = []) {
    for (const r of records) this.#records.set(`${r.logicalName}\0${r.id}`, new Entity(r.logicalName, r.id, { ...r.attributes }));
  }
  /** The record as it is now (null if there is none). */
  get(entity, id) {
    return this.#records.get(`${entity}\0${id}`) ?? null;
  }
  all(entity) {
    return [...this.#records.values()].filter((r) => r.logicalName === entity).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
  #existing(entity, id) {
    if (!entity) throw new InvalidRecordCall('an entity name is required');
    const record = this.get(entity, id);
    if (!record) throw new RecordNotFound(`${entity} ${id}`);
    return record;
  }
  create(entity, attributes) {
    if (!entity) throw new InvalidRecordCall('an entity name is required');
    const { id = randomUUID(), ...rest } = attributes;
    if (typeof id !== 'string') throw new InvalidRecordCall("a record's id is a string");
    if (this.get(entity, id)) throw new InvalidRecordCall(`${entity} ${id} already exists`);
    this.#records.set(`${entity}\0${id}`, new Entity(entity, id, rest));
    return id;
  }
  retrieve(entity, id, columns = []) {
    const record = this.#existing(entity, id);
    const kept = Object.entries(record.attributes).filter(([k]) => !columns.length || columns.includes(k));
    return new Entity(entity, id, Object.fromEntries(kept));
  }
  update(entity, id, attributes) {
    if ('id' in attributes) throw new InvalidRecordCall("a record's id cannot be updated");
    Object.assign(this.#existing(entity, id).attributes, attributes);
  }
  delete(entity, id) {
    this.#existing(entity, id);
    this.#records.delete(`${entity}\0${id}`);
  }
  query(entity, columns, conditions, top) {
    if (!entity) throw new InvalidRecordCall('an entity name is required');
    const found = this.all(entity).filter((r) => conditions.every((c) => meets(r, c)));
    return found.slice(0, top ?? found.length).map((r) => this.retrieve(entity, r.id, columns));
  }
}

/**
 * Runs a plug-in (the `plugin(...)` handler or its function) once as the host would.
 * `context` is a context object, its JSON form or a path; `records` a list of Entity, of
 * their JSON form, or a path. A record the context is about (its record id, with a
 * Target or post-image) is created if `records` lacks it, as the host's write made it.
 */
export function run(plugin, context, { records = [], config = null, secureConfig = null, stage = undefined } = {}) {
  const execute = typeof plugin === 'function' ? plugin : plugin.run;
  let ctx = load(context);
  if (!('inputParameters' in ctx)) ctx = contextFromJson(ctx);
  ctx = forStage(ctx, stage ?? ctx.stage);
  const entities = (load(records) ?? []).map((r) => (r instanceof Entity ? r : entityFromJson(r)));
  const store = new FakeRecords(entities);
  const written = ctx.postImage ?? ctx.target;
  if (ctx.recordId && written && ctx.message !== 'Delete' && !store.get(ctx.entity, ctx.recordId)) {
    store.create(ctx.entity, { ...written.attributes, id: ctx.recordId });
  }
  const result = { output: null, error: null, trace: [], changes: [], records: store };
  const previous = useHost({
    create: (entity, attributes) => {
      const id = store.create(entity, attributes);
      result.changes.push(['create', entity, id]);
      return id;
    },
    retrieve: (entity, id, columns) => store.retrieve(entity, id, columns),
    update: (entity, id, attributes) => {
      store.update(entity, id, attributes);
      result.changes.push(['update', entity, id]);
    },
    delete: (entity, id) => {
      store.delete(entity, id);
      result.changes.push(['delete', entity, id]);
    },
    query: (entity, columns, conditions, top) => store.query(entity, columns, conditions, top),
    trace: (message) => result.trace.push(message),
    unsecureConfig: () => config,
    secureConfig: () => secureConfig,
  });
  const succeed = (returned) => {
    const output = outputOf(returned);
    Object.values(output.outputParameters).concat(Object.values(output.sharedVariables)).forEach(check);
    result.output = output;
    return result;
  };
  const fail = (error) => {
    result.error = failureOf(error);
    return result;
  };
  let returned;
  try {
    returned = execute(ctx);
  } catch (error) {
    useHost(previous);
    return fail(error);
  }
  // An async plug-in (one that awaits): the result is a promise of the same Result.
  if (typeof returned?.then === 'function') {
    return returned.then(succeed, fail).finally(() => useHost(previous));
  }
  try {
    return succeed(returned);
  } catch (error) {
    return fail(error);
  } finally {
    useHost(previous);
  }
}

export { Output };
