// The host's services through the component's imports. The build's entry imports this
// module first (see bin/sluice-js.js), so a plug-in's calls reach the Sluice host.

import * as witRecords from 'sluice:plugin/records@0.1.0';
import { trace as witTrace } from 'sluice:plugin/tracing@0.1.0';
import * as witConfig from 'sluice:plugin/config@0.1.0';
import { InvalidRecordCall, RecordNotFound, entityFromWit, useHost } from './index.js';
import { attributesToWit, toWit } from './values.js';

function call(fn, ...args) {
  try {
    return fn(...args);
  } catch (error) {
    const payload = error?.payload;
    if (payload?.tag === 'not-found') throw new RecordNotFound(payload.val);
    if (payload?.tag === 'invalid') throw new InvalidRecordCall(payload.val);
    throw error;
  }
}

useHost({
  create: (entity, attributes) => call(witRecords.create, entity, attributesToWit(attributes)),
  retrieve: (entity, id, columns) => entityFromWit(call(witRecords.retrieve, entity, id, columns)),
  update: (entity, id, attributes) => call(witRecords.update, entity, id, attributesToWit(attributes)),
  delete: (entity, id) => call(witRecords.delete, entity, id),
  query: (entity, columns, conditions, top) =>
    call(witRecords.query, {
      entity,
      columns,
      conditions: conditions.map((c) => ({ attribute: c.attribute, operator: c.operator, value: toWit(c.value) })),
      top,
    }).map(entityFromWit),
  trace: (message) => witTrace(message),
  unsecureConfig: () => witConfig.unsecure(),
  secureConfig: () => witConfig.secure(),
});
