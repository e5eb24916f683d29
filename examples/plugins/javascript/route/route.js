// `route` in JavaScript: the same decisions as plugins/route (Rust).
//
// Config keys (all optional): priority_field (priority), urgent_values (high, comma-separated),
// urgent_route (urgent), type_field (event_type), error_values (error), error_route (errors).
// Any other key, or an empty field or route name, fails `init` with an error naming the key.
//
// 1. the priority field's value is one of urgent_values -> route urgent_route;
// 2. else the type field's value is one of error_values -> route error_route;
// 3. else pass.
//
// A string field matches by its unescaped text; a number or boolean by its JSON text (so
// urgent_values = "1" matches "priority": 1). A value that is not a JSON object is
// dead-lettered with the scanner's reason: `null value`, "not a JSON object: found `[` at byte
// 0", `not a JSON object: empty value (end at byte 0)`, `invalid JSON: unexpected end at byte 12`.
//
// The fields are found by a port of the Rust SDK's scanner (plugin-sdk/src/json.rs), so that
// both plugins take the same records: it walks the top-level object key by key, skips each
// value in place (checking its outline), stops once both fields are found, lets the first of
// two equal keys win, and never recurses.
//
// The scanner runs in SpiderMonkey's interpreter (there is no JIT in WebAssembly), JSON.parse
// is compiled C++: so a record first goes through `quick`, which asks JSON.parse and answers
// only where the scanner is known to agree (see there), and falls back to the scanner
// otherwise.

const KEYS = ['priority_field', 'urgent_values', 'urgent_route', 'type_field', 'error_values', 'error_route'];

let config = null;

// Verdicts are made once and shared: the bindings only read them.
const PASS = { tag: 'pass' };
const NULL_VALUE = { tag: 'dead-letter', val: 'null value' };

export const transform = {
  init(pairs) {
    for (const [key] of pairs) {
      if (!KEYS.includes(key)) {
        throw `unknown config key \`${key}\` (known keys: ${KEYS.join(', ')})`;
      }
    }
    const given = new Map(pairs);
    const name = (key, fallback) => {
      const value = (given.get(key) ?? fallback).trim();
      if (value === '') throw `invalid value for config key \`${key}\`: must not be empty`;
      return value;
    };
    const values = (key, fallback) =>
      (given.get(key) ?? fallback).split(',').map((v) => v.trim()).filter((v) => v !== '');
    config = {
      priorityField: name('priority_field', 'priority'),
      urgentValues: values('urgent_values', 'high'),
      urgentRoute: name('urgent_route', 'urgent'),
      typeField: name('type_field', 'event_type'),
      errorValues: values('error_values', 'error'),
      errorRoute: name('error_route', 'errors'),
    };
    config.urgent = { tag: 'route', val: config.urgentRoute };
    config.error = { tag: 'route', val: config.errorRoute };
    config.priorityQuoted = JSON.stringify(config.priorityField);
    config.typeQuoted = JSON.stringify(config.typeField);
  },

  process(batch) {
    const records = batch.records;
    const verdicts = new Array(records.length);
    for (let i = 0; i < records.length; i++) verdicts[i] = decide(records[i].value);
    return verdicts;
  },
};

function decide(value) {
  if (value === undefined || value === null) return NULL_VALUE;
  return quick(value) ?? scanned(value);
}

// --- the quick path ----------------------------------------------------------------------

const UNSURE = Symbol('unsure');
// `ignoreBOM`: a leading BOM stays in the text, so JSON.parse refuses it as the scanner does.
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

// The verdict for `value` from JSON.parse, or undefined where only the scanner can tell.
//
// It answers for a value that is UTF-8 without a backslash and that JSON.parse reads as an
// object. Such a value is valid JSON, so the scanner takes it too, and finds the same fields:
// with no escape anywhere, a key reads as it is written, so a field whose quoted name occurs
// once in the text is given once (the scanner keeps the first of two equal keys, JSON.parse
// the last: a name that occurs twice is left to the scanner), and a string's text is what
// JSON.parse returns. A number is matched by how it is written, which JSON.parse does not
// keep: left to the scanner too.
function quick(value) {
  let text;
  let doc;
  try {
    text = strictUtf8.decode(value);
    if (text.includes('\\')) return undefined;
    doc = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return undefined;
  const priority = quickMatch(text, doc, config.priorityField, config.priorityQuoted, config.urgentValues);
  if (priority === UNSURE) return undefined;
  if (priority) return config.urgent;
  const eventType = quickMatch(text, doc, config.typeField, config.typeQuoted, config.errorValues);
  if (eventType === UNSURE) return undefined;
  return eventType ? config.error : PASS;
}

// Whether field `name` of `doc` (parsed from `text`) is one of `values`; UNSURE if JSON.parse
// cannot tell.
function quickMatch(text, doc, name, quoted, values) {
  if (!Object.hasOwn(doc, name)) return false;
  if (text.indexOf(quoted) !== text.lastIndexOf(quoted)) return UNSURE;
  const field = doc[name];
  switch (typeof field) {
    case 'string':
      return values.includes(field);
    case 'boolean':
      return values.includes(field ? 'true' : 'false');
    case 'number':
      return UNSURE;
    default:
      return false; // null, an object or an array
  }
}

// --- the scanner's verdict ---------------------------------------------------------------

function scanned(value) {
  let found;
  try {
    found = fields(value, [config.priorityField, config.typeField]);
  } catch (e) {
    if (e instanceof ScanError) return { tag: 'dead-letter', val: e.message };
    throw e;
  }
  const [priority, eventType] = found;
  if (isOneOf(priority, config.urgentValues)) return config.urgent;
  if (isOneOf(eventType, config.errorValues)) return config.error;
  return PASS;
}

// Whether a found field (kind, start, end, escaped) equals one of `values`.
function isOneOf(field, values) {
  if (!field) return false;
  const { kind, bytes, start, end, escaped } = field;
  if (kind === 'string') {
    const text = unescape(bytes, start + 1, end - 1, escaped);
    return text !== null && values.includes(text);
  }
  if (kind === 'number' || kind === 'boolean') {
    return values.includes(latin1(bytes, start, end));
  }
  return false;
}

// --- the scanner -------------------------------------------------------------------------

class ScanError extends Error {}

function latin1(bytes, start, end) {
  let out = '';
  for (let i = start; i < end; i += 8192) {
    out += String.fromCharCode.apply(null, bytes.subarray(i, Math.min(end, i + 8192)));
  }
  return out;
}

const BLANK = /[ \t\n\r]*/y;
// The rest of a string after its opening quote, up to (not including) the closing quote.
const STRING_BODY = /(?:[^"\\\x00-\x1f]+|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*/y;
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
// Inside a nested value, everything up to the next quote or bracket.
const NESTED_PLAIN = /[^"\[\]{}]*/y;

function matchEnd(re, s, i) {
  re.lastIndex = i;
  const m = re.exec(s);
  return m ? i + m[0].length : -1;
}

const blank = (s, i) => matchEnd(BLANK, s, i);

function show(code) {
  return code >= 0x21 && code <= 0x7e ? String.fromCharCode(code) : `\\x${code.toString(16).padStart(2, '0')}`;
}

function unexpected(s, at) {
  if (at < s.length) return new ScanError(`invalid JSON: unexpected \`${show(s.charCodeAt(at))}\` at byte ${at}`);
  return new ScanError(`invalid JSON: unexpected end at byte ${s.length}`);
}

// The top-level fields `names` of the JSON object in `bytes`: one {kind, start, end, escaped}
// or undefined per name, in one pass that stops once every name is found.
function fields(bytes, names) {
  const s = latin1(bytes, 0, bytes.length);
  let i = blank(s, 0);
  if (i === s.length) throw new ScanError(`not a JSON object: empty value (end at byte ${i})`);
  if (s[i] !== '{') throw new ScanError(`not a JSON object: found \`${show(s.charCodeAt(i))}\` at byte ${i}`);
  const found = names.map(() => undefined);
  let missing = names.length;
  i = blank(s, i + 1);
  if (s[i] === '}') {
    end(s, i + 1);
    return found;
  }
  for (;;) {
    i = blank(s, i);
    if (s[i] !== '"') throw unexpected(s, i);
    const keyStart = i + 1;
    const [afterKey, keyEscaped] = string(s, keyStart);
    i = blank(s, afterKey);
    if (s[i] !== ':') throw unexpected(s, i);
    i = blank(s, i + 1);
    const valueStart = i;
    const [valueEnd, kind, escaped] = value(s, i);
    // The value must end where a value may end, or `01` would be found as `0`.
    i = blank(s, valueEnd);
    let last;
    if (s[i] === ',') last = false;
    else if (s[i] === '}') last = true;
    else throw unexpected(s, i);
    i += 1;
    const key = unescape(bytes, keyStart, afterKey - 1, keyEscaped);
    names.forEach((name, n) => {
      if (found[n] === undefined && key === name) {
        found[n] = { kind, bytes, start: valueStart, end: valueEnd, escaped };
        missing -= 1;
      }
    });
    if (missing === 0) return found;
    if (last) {
      end(s, i);
      return found;
    }
  }
}

// After the top-level object: only blanks may follow.
function end(s, i) {
  i = blank(s, i);
  if (i !== s.length) throw unexpected(s, i);
}

// The rest of a string, `i` just past its opening quote: [index past it, has escapes].
function string(s, i) {
  let end = matchEnd(STRING_BODY, s, i);
  if (s[end] !== '"') {
    // On a bad escape, point where the Rust scanner does: at the byte after the backslash,
    // or at the first bad hex digit of a \u escape.
    if (s.startsWith('\\u', end)) {
      end += 2;
      while (end < s.length && /[0-9a-fA-F]/.test(s[end])) end += 1;
    } else if (s[end] === '\\') {
      end += 1;
    }
    throw unexpected(s, end);
  }
  return [end + 1, s.slice(i, end).includes('\\')];
}

// One value of any kind: [index past it, kind, whether a string has escapes].
function value(s, i) {
  const c = s[i];
  if (c === '"') {
    const [end, escaped] = string(s, i + 1);
    return [end, 'string', escaped];
  }
  if (c === '-' || (c >= '0' && c <= '9')) {
    const end = matchEnd(NUMBER, s, i);
    if (end < 0) throw unexpected(s, i + 1);
    return [end, 'number', false];
  }
  if (c === '{' || c === '[') return [nested(s, i), c === '{' ? 'object' : 'array', false];
  for (const [word, kind] of [['true', 'boolean'], ['false', 'boolean'], ['null', 'null']]) {
    if (c === word[0]) {
      for (let k = 0; k < word.length; k++) {
        if (s[i + k] !== word[k]) throw unexpected(s, i + k);
      }
      return [i + word.length, kind, false];
    }
  }
  throw unexpected(s, i);
}

// A nested object or array at `i`: brackets must match (checked for the first 64 levels),
// strings inside are skipped whole, other tokens are not checked.
function nested(s, i) {
  let depth = 0;
  const opened = [];
  for (;;) {
    i = matchEnd(NESTED_PLAIN, s, i);
    if (i === s.length) throw unexpected(s, i);
    const c = s[i];
    if (c === '"') {
      i = string(s, i + 1)[0];
      continue;
    }
    if (c === '[' || c === '{') {
      if (depth < 64) opened.push(c);
      depth += 1;
    } else {
      if (depth <= 64 && opened.pop() !== (c === '}' ? '{' : '[')) throw unexpected(s, i);
      depth -= 1;
      if (depth === 0) return i + 1;
    }
    i += 1;
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

// A string's contents (between its quotes) as text; null if not UTF-8 or holding a lone
// surrogate, which then equals no configured name.
function unescape(bytes, start, end, escaped) {
  let text;
  try {
    text = utf8.decode(bytes.subarray(start, end));
    if (escaped) text = JSON.parse(`"${text}"`);
  } catch {
    return null;
  }
  return LONE_SURROGATE.test(text) ? null : text;
}
