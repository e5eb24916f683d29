// `validate` in JavaScript: the same decisions as plugins/validate (Rust).
//
// Passes records whose value is a JSON object with the required fields and types;
// dead-letters every other record with the first reason found.
//
// Config key `required` (default: none): comma-separated `field:type` pairs, e.g.
// `event_id:string,timestamp:number`. Types: string, number, integer (a number written without
// fraction or exponent, in the 64-bit range), boolean, object, array, null, any (present,
// whatever its value). An unknown type, a field listed twice, an item that is not a
// `field:type` pair, or any other config key fails `init` with an error naming it.
//
// Dead-letter reasons, checked in this order, the first failure wins:
//
//   null value
//   not UTF-8: invalid byte at 3
//   invalid JSON at byte 17: trailing comma      (serde_json's wording)
//   not a JSON object
//   missing field user_id                        (required fields in config order)
//   expected number at timestamp, found string
//
// JSON.parse cannot tell `1.0` from `1` and reports no byte offsets, so the value is checked
// by a scanner over its bytes: one pass, no tree, an explicit stack instead of recursion (deep
// nesting cannot exhaust the wasm stack). A top-level key given twice: the last one counts.
// The scanner runs in SpiderMonkey's interpreter (there is no JIT in WebAssembly), JSON.parse
// is compiled C++: so a record first goes through `quick`, which asks JSON.parse and answers
// only where the scanner is known to agree (see there), and falls back to the scanner
// otherwise.

const TYPES = ['string', 'number', 'integer', 'boolean', 'object', 'array', 'null', 'any'];

let required = []; // [name, type, quoted name] in config order

// Verdicts without a reason are made once and shared: the bindings only read them.
const PASS = { tag: 'pass' };

export const transform = {
  init(pairs) {
    for (const [key] of pairs) {
      if (key !== 'required') throw `unknown config key \`${key}\` (known keys: required)`;
    }
    const invalid = (what) => `invalid value for config key \`required\`: ${what}`;
    const list = [];
    const text = new Map(pairs).get('required') ?? '';
    for (const raw of text.split(',')) {
      const item = raw.trim();
      if (item === '') continue;
      const colon = item.indexOf(':');
      const name = colon < 0 ? '' : item.slice(0, colon).trim();
      const type = colon < 0 ? '' : item.slice(colon + 1).trim();
      if (name === '' || type === '') throw invalid(`\`${item}\` is not a \`name:name\` pair`);
      if (!TYPES.includes(type)) {
        throw invalid(`unknown type \`${type}\` for field \`${name}\` (known types: ${TYPES.join(', ')})`);
      }
      if (list.some(([n]) => n === name)) throw invalid(`field \`${name}\` is listed twice`);
      list.push([name, type, JSON.stringify(name)]);
    }
    required = list;
  },

  process(batch) {
    const records = batch.records;
    const verdicts = new Array(records.length);
    for (let i = 0; i < records.length; i++) {
      const reason = check(records[i].value);
      verdicts[i] = reason === null ? PASS : { tag: 'dead-letter', val: reason };
    }
    return verdicts;
  },
};

// The reason to dead-letter a record with this value, or null to pass it.
function check(value) {
  if (value === undefined || value === null) return 'null value';
  const answer = quick(value);
  return answer === undefined ? scanned(value) : answer;
}

// `ignoreBOM`: a leading BOM stays in the text, so JSON.parse refuses it as serde_json does.
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

// What `check` answers for `value`, from JSON.parse; undefined where only the scanner can
// tell.
//
// It answers for a value that is UTF-8 without a backslash and that JSON.parse reads as an
// object. Such a value is valid JSON, and with no escape anywhere a key reads as it is
// written. What is left to the scanner: a required name whose quoted form occurs twice in the
// text (serde_json reads every value given for a key, JSON.parse keeps the last), a required
// number that JSON.parse reads as infinite (serde_json: out of range), and a required number
// where `integer` is expected (JSON.parse does not keep `1.0` apart from `1`).
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
  // Syntax comes before fields: every required value must be known good before a reason is
  // given for one of them.
  for (const [name, expected, quoted] of required) {
    if (!Object.hasOwn(doc, name)) continue;
    if (text.indexOf(quoted) !== text.lastIndexOf(quoted)) return undefined;
    const field = doc[name];
    if (typeof field === 'number' && (!Number.isFinite(field) || expected === 'integer')) return undefined;
  }
  for (const [name, expected] of required) {
    if (!Object.hasOwn(doc, name)) return `missing field ${name}`;
    const field = doc[name];
    const kind =
      field === null ? 'null' : Array.isArray(field) ? 'array' : typeof field === 'number' ? 'float' : typeof field;
    if (!accepts(expected, kind)) {
      return `expected ${expected} at ${name}, found ${kind === 'float' ? 'number' : kind}`;
    }
  }
  return null;
}

// `check` for a value `quick` leaves: the scanner's answer.
function scanned(value) {
  const bad = invalidUtf8(value);
  if (bad >= 0) return `not UTF-8: invalid byte at ${bad}`;
  let kinds;
  try {
    kinds = scan(value, new Set(required.map(([name]) => name)));
  } catch (e) {
    if (e instanceof Syntax) return `invalid JSON at byte ${e.at}: ${e.message}`;
    throw e;
  }
  if (kinds === null) return 'not a JSON object';
  for (const [name, expected] of required) {
    const kind = kinds.get(name);
    if (kind === undefined) return `missing field ${name}`;
    if (!accepts(expected, kind)) {
      return `expected ${expected} at ${name}, found ${kind === 'integer' || kind === 'float' ? 'number' : kind}`;
    }
  }
  return null;
}

function accepts(expected, kind) {
  if (expected === 'any') return true;
  if (expected === 'number') return kind === 'integer' || kind === 'float';
  return expected === kind;
}

// Index of the first byte that does not start a valid UTF-8 sequence (as Rust's
// `valid_up_to`), or -1.
function invalidUtf8(b) {
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    if (c < 0x80) {
      i += 1;
      continue;
    }
    let need;
    let lo = 0x80;
    let hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) need = 1;
    else if (c >= 0xe0 && c <= 0xef) {
      need = 2;
      if (c === 0xe0) lo = 0xa0;
      if (c === 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      need = 3;
      if (c === 0xf0) lo = 0x90;
      if (c === 0xf4) hi = 0x8f;
    } else return i;
    for (let k = 1; k <= need; k++) {
      const d = b[i + k];
      const [min, max] = k === 1 ? [lo, hi] : [0x80, 0xbf];
      if (d === undefined || d < min || d > max) return i;
    }
    i += need + 1;
  }
  return -1;
}

class Syntax extends Error {
  constructor(at, message) {
    super(message);
    this.at = at;
  }
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const isBlank = (c) => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
const isDigit = (c) => c >= 0x30 && c <= 0x39;
const isHex = (c) => isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
const utf8 = new TextDecoder('utf-8');

// The kind of each required top-level field if `b` is a JSON object, null if it is another
// JSON value; throws Syntax (with serde_json's message) if it is not JSON.
function scan(b, names) {
  const n = b.length;
  const ws = (i) => {
    while (i < n && isBlank(b[i])) i += 1;
    return i;
  };
  // A string at `i` (its opening quote): [index past it, has escapes].
  const string = (i) => {
    let escaped = false;
    for (i += 1; ; ) {
      if (i >= n) throw new Syntax(n, 'EOF while parsing a string');
      const c = b[i];
      if (c === QUOTE) return [i + 1, escaped];
      if (c < 0x20) throw new Syntax(i, 'control character (\\u0000-\\u001F) found while parsing a string');
      if (c === BACKSLASH) {
        escaped = true;
        const e = b[i + 1];
        if (e === undefined) throw new Syntax(n, 'EOF while parsing a string');
        if (e === 0x75) {
          for (let k = 2; k < 6; k++) {
            if (i + k >= n) throw new Syntax(n, 'EOF while parsing a string');
            if (!isHex(b[i + k])) throw new Syntax(i + k, 'invalid escape');
          }
          i += 6;
        } else if ('"\\/bfnrt'.includes(String.fromCharCode(e))) i += 2;
        else throw new Syntax(i + 1, 'invalid escape');
      } else i += 1;
    }
  };
  const text = (start, end) => JSON.parse(utf8.decode(b.subarray(start, end)));
  // A string's text, refusing a lone surrogate escape where serde_json reads the string.
  const readString = (start, end, escaped) => {
    const t = escaped ? text(start, end) : utf8.decode(b.subarray(start + 1, end - 1));
    if (escaped && /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(t)) {
      throw new Syntax(end, 'lone leading surrogate in hex escape');
    }
    return t;
  };
  // A number at `i`: [index past it, 'integer' or 'float'].
  const number = (i) => {
    const start = i;
    if (b[i] === 0x2d) i += 1;
    if (i >= n) throw new Syntax(n, 'EOF while parsing a value');
    if (b[i] === 0x30) i += 1;
    else if (isDigit(b[i])) while (i < n && isDigit(b[i])) i += 1;
    else throw new Syntax(i, 'invalid number');
    let float = false;
    if (b[i] === 0x2e) {
      float = true;
      i += 1;
      if (i >= n) throw new Syntax(n, 'EOF while parsing a value');
      if (!isDigit(b[i])) throw new Syntax(i, 'invalid number');
      while (i < n && isDigit(b[i])) i += 1;
    }
    if (b[i] === 0x65 || b[i] === 0x45) {
      float = true;
      i += 1;
      if (b[i] === 0x2b || b[i] === 0x2d) i += 1;
      if (i >= n) throw new Syntax(n, 'EOF while parsing a value');
      if (!isDigit(b[i])) throw new Syntax(i, 'invalid number');
      while (i < n && isDigit(b[i])) i += 1;
    }
    const written = utf8.decode(b.subarray(start, i));
    if (!float && written !== '-0') {
      const value = BigInt(written);
      if (value >= -(2n ** 63n) && value < 2n ** 64n) return [i, 'integer'];
    }
    if (!Number.isFinite(Number(written))) throw new Syntax(i, 'number out of range');
    return [i, 'float'];
  };
  const literal = (i, word) => {
    for (let k = 0; k < word.length; k++) {
      if (i + k >= n) throw new Syntax(n, 'EOF while parsing a value');
      if (b[i + k] !== word.charCodeAt(k)) throw new Syntax(i + k, 'expected ident');
    }
    return i + word.length;
  };

  let kinds = null; // a Map once the document is known to be an object
  // Open containers: {object, key} where key is the top-level field a container sits under.
  const stack = [];
  let key = null; // the top-level key whose value comes next
  const atTop = () => stack.length === 1 && stack[0].object;
  const record = (k, kind) => {
    if (k !== null && names.has(k)) kinds.set(k, kind);
  };
  // Reads `"key":` inside an object at `i` (just after `{` or `,`, blanks skipped).
  const member = (i) => {
    if (i >= n) throw new Syntax(n, 'EOF while parsing an object');
    if (b[i] !== QUOTE) throw new Syntax(i, 'key must be a string');
    const [end, escaped] = string(i);
    key = atTop() ? readString(i, end, escaped) : null;
    i = ws(end);
    if (i >= n) throw new Syntax(n, 'EOF while parsing an object');
    if (b[i] !== 0x3a) throw new Syntax(i, 'expected `:`');
    return ws(i + 1);
  };

  let i = ws(0);
  for (;;) {
    // A value at `i`.
    if (i >= n) throw new Syntax(n, 'EOF while parsing a value');
    const c = b[i];
    const under = atTop() ? key : null;
    let kind = null;
    if (c === 0x7b || c === 0x5b) {
      const object = c === 0x7b;
      if (stack.length === 0 && object) kinds = new Map();
      stack.push({ object, key: under });
      i = ws(i + 1);
      if (b[i] === (object ? 0x7d : 0x5d)) {
        stack.pop();
        i += 1;
        kind = object ? 'object' : 'array';
      } else {
        if (object) i = member(i);
        continue;
      }
    } else if (c === QUOTE) {
      const [end, escaped] = string(i);
      if (under !== null && names.has(under)) readString(i, end, escaped);
      i = end;
      kind = 'string';
    } else if (c === 0x2d || isDigit(c)) {
      [i, kind] = number(i);
    } else if (c === 0x74) {
      i = literal(i, 'true');
      kind = 'boolean';
    } else if (c === 0x66) {
      i = literal(i, 'false');
      kind = 'boolean';
    } else if (c === 0x6e) {
      i = literal(i, 'null');
      kind = 'null';
    } else throw new Syntax(i, 'expected value');
    if (atTop()) record(under, kind);
    // After a value: close containers, or go on to the next element.
    for (;;) {
      if (stack.length === 0) {
        i = ws(i);
        if (i !== n) throw new Syntax(i, 'trailing characters');
        return kinds;
      }
      const top = stack[stack.length - 1];
      i = ws(i);
      if (i >= n) throw new Syntax(n, top.object ? 'EOF while parsing an object' : 'EOF while parsing a list');
      if (b[i] === 0x2c) {
        i = ws(i + 1);
        if (b[i] === (top.object ? 0x7d : 0x5d)) throw new Syntax(i, 'trailing comma');
        if (top.object) i = member(i);
        break;
      }
      if (b[i] !== (top.object ? 0x7d : 0x5d)) {
        throw new Syntax(i, top.object ? 'expected `,` or `}`' : 'expected `,` or `]`');
      }
      stack.pop();
      i += 1;
      if (atTop()) record(top.key, top.object ? 'object' : 'array');
    }
  }
}
