// `reading-time`: a JavaScript plugin. On `text.analyze` it estimates how
// long the text takes to read (at 200 words a minute) and finds its longest
// word, as JSON, in the same fan-out as the Rust, Python and C plugins.
//
// Built with componentize-js (`cargo xtask plugins`); see
// docs/writing-plugins.md, "JavaScript".

import { log } from 'anocast:worker/host@0.2.0';

const WORDS_PER_MINUTE = 200;
const decoder = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();

export function describe() {
  return { name: 'reading-time', version: '0.1.0', topics: ['text.analyze'] };
}

export function interested(task) {
  return task.payload.length > 0;
}

export function handle(task) {
  let text;
  try {
    text = decoder.decode(task.payload);
  } catch {
    throw 'the text is not UTF-8';
  }
  const words = text.split(/\s+/).filter((w) => w.length > 0);
  const seconds = Math.ceil((words.length * 60) / WORDS_PER_MINUTE);
  const longest = words
    .map((w) => w.replace(/[^A-Za-z0-9'-]/g, ''))
    .reduce((best, w) => (w.length > best.length ? w : best), '');
  log('debug', `${words.length} words`);
  return encoder.encode(JSON.stringify({ reading_seconds: seconds, longest_word: longest }));
}

export function settle(requestId, committed) {}
