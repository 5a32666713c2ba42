// Record values as JavaScript values, to and from the WIT shapes componentize-js uses
// ({ tag, val }) and the JSON form `sluice plugin run` reads.
//
// | WIT value        | JavaScript                          | JSON                                  |
// |------------------|-------------------------------------|---------------------------------------|
// | null             | null                                | null                                  |
// | string           | string                              | "text"                                |
// | integer          | number (bigint past 2^53)           | 42                                    |
// | decimal          | Decimal (exact, from a string)      | 12.5 or {"decimal": "12.50"}          |
// | boolean          | boolean                             | true                                  |
// | date-time        | Date (millisecond precision)        | {"date-time": "2026-11-23T05:00:00Z"} |
// | money            | Money (a Decimal)                   | {"money": "100.00"}                   |
// | option-set       | OptionSet                           | {"option-set": 3}                     |
// | entity-reference | EntityReference                     | {"entity-reference": {...}}           |

export const MAX_SCALE = 18;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/** An exact decimal number: `units / 10^scale`. */
export class Decimal {
  constructor(text) {
    const s = String(text).trim();
    const m = /^(-?)(\d*)(?:\.(\d*))?$/.exec(s);
    if (!m || (m[2] === '' && (m[3] ?? '') === '')) throw new TypeError(`'${s}' is not a decimal number`);
    const fraction = m[3] ?? '';
    if (fraction.length > MAX_SCALE) throw new RangeError(`${s} has more than ${MAX_SCALE} decimal places`);
    const units = BigInt(`${m[1]}${m[2] || '0'}${fraction}`);
    if (units < I64_MIN || units > I64_MAX) throw new RangeError(`${s} does not fit a 64-bit decimal`);
    this.units = units;
    this.scale = fraction.length;
  }
  static fromParts(units, scale) {
    const negative = BigInt(units) < 0n;
    const digits = (negative ? -BigInt(units) : BigInt(units)).toString().padStart(scale + 1, '0');
    const whole = digits.slice(0, digits.length - scale);
    const text = scale ? `${whole}.${digits.slice(digits.length - scale)}` : whole;
    return new this(`${negative ? '-' : ''}${text}`);
  }
  toString() {
    return this.format();
  }
  format() {
    const negative = this.units < 0n;
    const digits = (negative ? -this.units : this.units).toString().padStart(this.scale + 1, '0');
    const whole = digits.slice(0, digits.length - this.scale);
    return `${negative ? '-' : ''}${this.scale ? `${whole}.${digits.slice(digits.length - this.scale)}` : whole}`;
  }
  toNumber() {
    return Number(this.toString());
  }
  equals(other) {
    return other instanceof Decimal && other.constructor === this.constructor && compareDecimals(this, other) === 0;
  }
  toJSON() {
    return toJson(this);
  }
}

/** An amount of money: a decimal the host stores as `money`. */
export class Money extends Decimal {}

/** The value of a choice attribute (Dataverse's OptionSetValue). */
export class OptionSet {
  constructor(value) {
    if (!Number.isInteger(value) || value < -(2 ** 31) || value >= 2 ** 31) throw new RangeError(`${value} is not an option-set value`);
    this.value = value;
  }
  equals(other) {
    return other instanceof OptionSet && other.value === this.value;
  }
}

/** A reference to another record (a lookup). */
export class EntityReference {
  constructor(entity, id, name = undefined) {
    this.entity = entity;
    this.id = id;
    this.name = name;
  }
  equals(other) {
    return other instanceof EntityReference && other.entity === this.entity && other.id === this.id;
  }
}

export function compareDecimals(a, b) {
  const scale = Math.max(a.scale, b.scale);
  const x = BigInt(a.units) * 10n ** BigInt(scale - a.scale);
  const y = BigInt(b.units) * 10n ** BigInt(scale - b.scale);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Returns `value` if the host can hold it; throws a TypeError or RangeError naming why not. */
export function check(value) {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new RangeError(`${value} is not a finite number`);
    if (Number.isInteger(value) && !Number.isSafeInteger(value)) throw new RangeError(`${value} is past 2^53: give it as a bigint`);
    return value;
  }
  if (typeof value === 'bigint') {
    if (value < I64_MIN || value > I64_MAX) throw new RangeError(`${value} does not fit a 64-bit integer`);
    return value;
  }
  if (value instanceof Decimal || value instanceof OptionSet || value instanceof EntityReference) return value;
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw new RangeError('an invalid Date');
    return value;
  }
  if (value === undefined) throw new TypeError('undefined is not a record value: use null');
  throw new TypeError(`${value?.constructor?.name ?? typeof value} is not a record value`);
}

/** A JavaScript value as the WIT `value` variant. */
export function toWit(value) {
  check(value);
  if (value === null) return { tag: 'null' };
  if (typeof value === 'string') return { tag: 'string', val: value };
  if (typeof value === 'boolean') return { tag: 'boolean', val: value };
  if (typeof value === 'bigint') return { tag: 'integer', val: value };
  if (typeof value === 'number') {
    if (Number.isInteger(value)) return { tag: 'integer', val: BigInt(value) };
    return toWit(new Decimal(String(value)));
  }
  if (value instanceof Money) return { tag: 'money', val: { units: value.units, scale: value.scale } };
  if (value instanceof Decimal) return { tag: 'decimal', val: { units: value.units, scale: value.scale } };
  if (value instanceof OptionSet) return { tag: 'option-set', val: value.value };
  if (value instanceof EntityReference) return { tag: 'entity-reference', val: { entity: value.entity, id: value.id, name: value.name } };
  const ms = BigInt(value.getTime());
  const seconds = ms >= 0n ? ms / 1000n : -((-ms + 999n) / 1000n);
  return { tag: 'date-time', val: { seconds, nanoseconds: Number(ms - seconds * 1000n) * 1_000_000 } };
}

/** A WIT `value` variant as a JavaScript value. */
export function fromWit({ tag, val }) {
  switch (tag) {
    case 'null':
      return null;
    case 'string':
    case 'boolean':
      return val;
    case 'integer': {
      const n = BigInt(val);
      return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
    }
    case 'decimal':
      return Decimal.fromParts(val.units, val.scale);
    case 'money':
      return Money.fromParts(val.units, val.scale);
    case 'date-time':
      return new Date(Number(BigInt(val.seconds) * 1000n) + Math.floor(val.nanoseconds / 1_000_000));
    case 'option-set':
      return new OptionSet(val);
    case 'entity-reference':
      return new EntityReference(val.entity, val.id, val.name ?? undefined);
    default:
      throw new TypeError(`unknown value tag ${tag}`);
  }
}

/** A value from its JSON form. */
export function fromJson(value) {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') return Number.isInteger(value) ? value : new Decimal(String(value));
  if (typeof value === 'object' && Object.keys(value).length === 1) {
    const [[kind, inner]] = Object.entries(value);
    if (kind === 'decimal') return new Decimal(inner);
    if (kind === 'money') return new Money(inner);
    if (kind === 'date-time') return new Date(inner);
    if (kind === 'option-set') return new OptionSet(inner);
    if (kind === 'entity-reference') return new EntityReference(inner.entity, inner.id, inner.name ?? undefined);
  }
  throw new TypeError(`${JSON.stringify(value)} is not a record value in JSON form`);
}

/** A value's JSON form. */
export function toJson(value) {
  if (value instanceof Money) return { money: value.format() };
  if (value instanceof Decimal) return { decimal: value.format() };
  if (value instanceof Date) return { 'date-time': value.toISOString().replace('.000Z', 'Z') };
  if (value instanceof OptionSet) return { 'option-set': value.value };
  if (value instanceof EntityReference) {
    const reference = { entity: value.entity, id: value.id };
    if (value.name !== undefined) reference.name = value.name;
    return { 'entity-reference': reference };
  }
  return typeof value === 'bigint' ? Number(value) : value;
}

/** Whether two record values are equal (by value for decimals, dates and references). */
export function same(a, b) {
  if (a instanceof Date && b instanceof Date) return a.getTime() === b.getTime();
  if (a && typeof a.equals === 'function') return a.equals(b);
  if ((typeof a === 'bigint' || typeof a === 'number') && (typeof b === 'bigint' || typeof b === 'number')) {
    return Number.isInteger(Number(a)) && Number.isInteger(Number(b)) ? BigInt(a) === BigInt(b) : a === b;
  }
  return a === b;
}

export const attributesToWit = (attributes) => Object.entries(attributes ?? {}).map(([name, value]) => ({ name, value: toWit(value) }));
export const attributesFromWit = (list) => Object.fromEntries(list.map(({ name, value }) => [name, fromWit(value)]));
export const attributesFromJson = (object) => Object.fromEntries(Object.entries(object ?? {}).map(([k, v]) => [k, fromJson(v)]));
