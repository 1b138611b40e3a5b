// `js-limits`: a JavaScript test guest for the host's limits. The last
// token of the topic says what it does: `ok` answers "ok"; `spin` loops
// forever; `grow` keeps allocating until the memory limit stops it; `count`
// answers how many tasks this instance has served (it declares itself
// stateless, so the host may reuse a warm instance).

let served = 0;
const encoder = new TextEncoder();

export function describe() {
  return { name: 'js-limits', version: '0.1.0', topics: ['limits.js.*'] };
}

export function interested(task) {
  return true;
}

export function handle(task) {
  served += 1;
  const what = task.topic.split('.').pop();
  if (what === 'spin') {
    for (;;) {
      served += 1;
    }
  }
  if (what === 'grow') {
    const hoard = [];
    for (;;) {
      hoard.push(new Uint8Array(1 << 20).fill(1));
    }
  }
  if (what === 'count') {
    return encoder.encode(String(served));
  }
  return encoder.encode('ok');
}

export function settle(requestId, committed) {}
