// {{name}}: a Switchyard plugin.
//
// The host calls `init` once per instance with the stage's config map, then `process` with
// batches of records of one source partition, in offset order; `process` returns exactly one
// verdict per record, in the same order. The contract is wit/plugin.wit: componentize-js
// binds the `transform` export below to it. A record's key and value are Uint8Arrays (or
// undefined when null); a verdict is `{ tag: 'pass' }`, `{ tag: 'route', val: name }`,
// `{ tag: 'emit', val: [records] }`, `{ tag: 'drop' }` or `{ tag: 'dead-letter', val: reason }`.
//
// The example rule: a record whose JSON value has "priority": "high" goes to the route
// `urgent`; a value that is not a JSON object is dead-lettered with the reason; every other
// record passes on its current route. Replace `decide` with your own rule.

export const transform = {
  // The stage's [pipeline.stage.config] map, as [key, value] pairs, keys sorted. This plugin
  // takes no config, so any key is refused: a typo in the pipeline's config then fails the
  // load, naming the key, instead of being ignored. A thrown string is the reason the host
  // reports.
  init(config) {
    for (const [key] of config) {
      throw `unknown config key \`${key}\`: this plugin takes none`;
    }
  },

  // One verdict per record. An exception here dead-letters the batch's records one by one
  // (kind `trap`); prefer a dead-letter verdict with a reason.
  process(batch) {
    return batch.records.map((record) => decide(record.value));
  },
};

// Invalid UTF-8 is an error rather than replacement characters.
const utf8 = new TextDecoder('utf-8', { fatal: true });

// The rule for one record value (undefined: a null value, a tombstone).
//
// Routes are names declared in the pipeline's [pipeline.routes], never topic names: route
// `urgent` must be declared there (and given to `switchyard test-plugin` with
// `--route urgent`), or the record is dead-lettered as `bad-output`.
function decide(value) {
  if (value === undefined || value === null) {
    return { tag: 'dead-letter', val: 'value is null' };
  }
  let event = null;
  try {
    event = JSON.parse(utf8.decode(value));
  } catch {
    // Not UTF-8 or not JSON: dead-lettered below.
  }
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    return { tag: 'dead-letter', val: 'value is not a JSON object' };
  }
  if (event.priority === 'high') {
    return { tag: 'route', val: 'urgent' };
  }
  return { tag: 'pass' };
}
