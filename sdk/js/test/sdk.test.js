// The JavaScript SDK without a component: values, the harness, and the samples'
// behaviour (the same as their Rust twins), run with `node --test` by scripts/test.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { BusinessError, Decimal, Entity, EntityReference, Money, OptionSet, Output, TransientError, condition, fromJson, plugin, records, toJson } from '../src/index.js';
import { toWit, fromWit } from '../src/values.js';
import { run } from '../src/testing.js';
import { handler as echo } from '../../../sample-plugins/js/echo/echo.js';
import { handler as accountNumber } from '../../../sample-plugins/js/account-number/account-number.js';
import { handler as creditValidator } from '../../../sample-plugins/js/credit-validator/credit-validator.js';

const examples = new URL('../../../sample-plugins/examples/', import.meta.url);

test('values read and write the JSON form the host uses', () => {
  const forms = [
    [null, null],
    ['text', 'text'],
    [42, 42],
    [true, true],
    [{ decimal: '12.50' }, new Decimal('12.50')],
    [{ money: '100.00' }, new Money('100.00')],
    [{ 'date-time': '2026-11-23T05:00:00Z' }, new Date('2026-11-23T05:00:00Z')],
    [{ 'option-set': 3 }, new OptionSet(3)],
    [{ 'entity-reference': { entity: 'account', id: 'a1', name: 'Contoso' } }, new EntityReference('account', 'a1', 'Contoso')],
  ];
  for (const [json, native] of forms) {
    assert.deepEqual(fromJson(json), native, JSON.stringify(json));
    assert.deepEqual(toJson(fromJson(json)), json);
    assert.deepEqual(fromWit(toWit(native)), native, 'through the WIT shape');
  }
  assert.deepEqual(toWit(new Money('-12.50')), { tag: 'money', val: { units: -1250n, scale: 2 } });
  assert.deepEqual(toWit(1.5), { tag: 'decimal', val: { units: 15n, scale: 1 } });
  assert.deepEqual(toWit(2n ** 60n), { tag: 'integer', val: 2n ** 60n });
  assert.equal(fromWit({ tag: 'integer', val: 2n ** 60n }), 2n ** 60n);
  assert.equal(fromWit({ tag: 'integer', val: 7n }), 7);
});

test('values the host cannot hold are refused by name', () => {
  assert.throws(() => new Output({ x: undefined }), /use null/);
  assert.throws(() => new Output({ x: {} }), /not a record value/);
  assert.throws(() => new Output({ x: 2 ** 60 }), /bigint/);
  assert.throws(() => new Decimal('0.' + '1'.repeat(19)), /decimal places/);
  assert.throws(() => new Output({ x: 2n ** 63n }), /64-bit/);
});

test('echo returns its inputs', () => {
  const result = run(echo, { message: 'Ping', entity: 'none', input_parameters: { n: 7, s: 'x' } });
  assert.equal(result.error, null);
  assert.deepEqual(result.output.outputParameters, { n: 7, s: 'x' });
});

test('account-number numbers after the highest in use', () => {
  const result = run(accountNumber, new URL('account-create.json', examples), { records: new URL('accounts.json', examples), config: 'ACC' });
  assert.equal(result.error, null);
  assert.deepEqual(result.output.outputParameters, { accountnumber: 'ACC-000042' });
  assert.deepEqual(result.changes, [['update', 'account', 'a-new']]);
  assert.equal(result.records.get('account', 'a-new').get('accountnumber'), 'ACC-000042');
  assert.deepEqual(result.trace, ['2 accounts numbered; a-new becomes ACC-000042']);
});

test('the harness creates the record a context is about', () => {
  const result = run(accountNumber, new URL('account-create.json', examples), { config: 'INV' });
  assert.deepEqual(result.output.outputParameters, { accountnumber: 'INV-000001' });
  assert.deepEqual(result.records.get('account', 'a-new').attributes, { name: 'Fabrikam', accountnumber: 'INV-000001' });
});

test('credit-validator refuses a negative limit with a business error', () => {
  const refused = run(creditValidator, new URL('account-negative-credit.json', examples));
  assert.deepEqual(refused.error, ['business', 'Credit limit cannot be negative (got -500.00).']);
  const nameless = { message: 'Create', entity: 'account', stage: 'pre-validation', target: { logical_name: 'account', id: 'a', attributes: {} } };
  assert.deepEqual(run(creditValidator, nameless).error, ['business', 'An account needs a name.']);
  const fine = { message: 'Create', entity: 'account', target: { logical_name: 'account', id: 'a', attributes: { name: 'Contoso', creditlimit: { money: '10' } } } };
  assert.deepEqual(run(creditValidator, fine).output.outputParameters, { valid: true });
});

test('errors become what the job records, and the handler throws the WIT error', () => {
  const context = { message: 'Create', entity: 'account' };
  const fails = (error) => () => {
    throw error;
  };
  assert.deepEqual(run(fails(new BusinessError('credit limit exceeded')), context).error, ['business', 'credit limit exceeded']);
  assert.deepEqual(run(fails(new TransientError('busy')), context).error, ['transient', 'busy']);
  assert.deepEqual(run(fails(new TypeError('x is undefined')), context).error, ['transient', 'TypeError: x is undefined']);
  assert.deepEqual(run(fails('a string'), context).error, ['transient', 'thrown: a string']);
  assert.deepEqual(run(() => records.retrieve('account', 'nope'), context).error, ['transient', 'RecordNotFound: account nope']);
  const witContext = { orgId: 'o', userId: 'u', message: 'Create', entity: 'account', stage: 'post-operation', mode: 'asynchronous', depth: 1, correlationId: 'c', inputParameters: [], sharedVariables: [] };
  assert.throws(() => plugin(fails(new RangeError('boom'))).execute(witContext), (e) => e.tag === 'transient' && e.val === 'RangeError: boom');
  assert.deepEqual(plugin(() => new Output({ a: 1 })).execute(witContext), { outputParameters: [{ name: 'a', value: { tag: 'integer', val: 1n } }], sharedVariables: [] });
});

test('queries follow the host operators', () => {
  const store = [new Entity('lead', 'l1', { score: 10, country: 'US' }), new Entity('lead', 'l2', { score: new Decimal('20.5'), country: 'DE' }), new Entity('lead', 'l3', { country: null })];
  const count = (where, top) => run(() => new Output({ n: records.query('lead', { where, top }).length }), { message: 'Ping', entity: 'lead' }, { records: store }).output.outputParameters.n;
  assert.equal(count([condition('score', 'greater-than', 15)]), 1);
  assert.equal(count([condition('score', 'less-equal', new Decimal('20.5'))]), 2);
  assert.equal(count([condition('country', 'is-null')]), 1);
  assert.equal(count([condition('country', 'not-equal', 'US')]), 2);
  assert.equal(count([], 2), 2);
  assert.throws(() => condition('score', 'like', 1), /unknown operator/);
});

test('stages see what the host shows them', () => {
  const context = JSON.parse(readFileSync(new URL('account-create.json', examples), 'utf8'));
  let seen;
  const look = (ctx) => {
    seen = ctx;
  };
  run(look, context, { stage: 'pre-operation' });
  assert.equal(seen.postImage, null);
  assert.deepEqual(seen.target.attributes, { name: 'Fabrikam' });
  run(look, context);
  assert.equal(seen.target, null);
  assert.deepEqual(seen.postImage.attributes, { name: 'Fabrikam' });
});

test('the packaged WIT is the host\'s', () => {
  const packaged = readFileSync(new URL('../wit/plugin.wit', import.meta.url), 'utf8');
  assert.equal(packaged, readFileSync(new URL('../../../wit/plugin.wit', import.meta.url), 'utf8'), 'copy wit/plugin.wit into the SDK');
});

test('an async plug-in runs to completion, and its rejection is a transient error', async () => {
  const waits = plugin(async (ctx) => {
    await new Promise((resolve) => setTimeout(resolve, 1));
    return new Output({ message: ctx.message });
  });
  const result = await run(waits, { message: 'Ping', entity: 'none' });
  assert.deepEqual(result.output.outputParameters, { message: 'Ping' });
  const rejects = await run(async () => {
    throw new Error('the rates service is down');
  }, { message: 'Ping', entity: 'none' });
  assert.deepEqual(rejects.error, ['transient', 'Error: the rates service is down']);
});
