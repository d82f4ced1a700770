/**
 * A linearizability checker for histories of a key-value store, each key a
 * read/write register: Wing and Gong's search with Lowe's memoisation (the
 * algorithm of Porcupine and Knossos), one key at a time, since a history is
 * linearizable exactly when each key's sub-history is.
 *
 * An operation is a call and a return, timed by the client on one clock. A
 * write whose outcome is unknown (a timeout, a connection that died) returns
 * at infinity: it may take effect at any point after its call, or never
 * (linearized last, no read sees it). A read or write that definitely failed
 * (a conflict, a refusal) had no effect and is left out of the history.
 */

/** One operation on one key. */
export interface Op {
  readonly key: string;
  /** `set` wrote `value`; `get` read `value` (undefined: not found). */
  readonly kind: "set" | "get";
  readonly value: string | undefined;
  /** When it was called and when its answer arrived (Infinity: never, outcome unknown). */
  readonly call: number;
  readonly ret: number;
}

/** The verdict on a history. */
export type Verdict =
  | { readonly ok: true; readonly keys: number; readonly ops: number }
  | {
      readonly ok: false;
      readonly key: string;
      /** That key's operations, in call order, for the report. */
      readonly ops: readonly Op[];
      readonly reason: string;
    };

/** Gives up on one key after this many search steps (a history of one key that large is a badly shaped test). */
const MAX_STEPS = 5_000_000;

/** Checks `history`, all keys starting absent unless `initial` says otherwise. */
export function checkHistory(history: readonly Op[], initial: ReadonlyMap<string, string> = new Map()): Verdict {
  const byKey = new Map<string, Op[]>();
  for (const op of history) {
    if (!(op.ret >= op.call)) throw new RangeError(`an operation on ${op.key} returns before its call`);
    const ops = byKey.get(op.key);
    if (ops === undefined) byKey.set(op.key, [op]);
    else ops.push(op);
  }
  for (const [key, ops] of byKey) {
    const result = checkRegister(ops, initial.get(key));
    if (result !== true) {
      return { ok: false, key, ops: [...ops].sort((a, b) => a.call - b.call), reason: result };
    }
  }
  return { ok: true, keys: byKey.size, ops: history.length };
}

interface Entry {
  /** Index of the operation. */
  readonly op: number;
  readonly isCall: boolean;
  readonly time: number;
  /** For a call, its return entry. */
  match: Entry | undefined;
  prev: Entry | undefined;
  next: Entry | undefined;
}

/**
 * Checks one register's operations: true, or why not. The search walks the
 * events in time order; at a call it tries to linearize that operation now
 * (the model must accept it and the resulting (set of linearized ops,
 * state) must be new), at a return of an operation not yet linearized it
 * backtracks.
 */
function checkRegister(ops: readonly Op[], initial: string | undefined): true | string {
  const n = ops.length;
  // Calls before returns at equal times: operations that touch are concurrent.
  const events: Entry[] = [];
  ops.forEach((op, i) => {
    const call: Entry = { op: i, isCall: true, time: op.call, match: undefined, prev: undefined, next: undefined };
    const ret: Entry = { op: i, isCall: false, time: op.ret, match: undefined, prev: undefined, next: undefined };
    call.match = ret;
    events.push(call, ret);
  });
  events.sort((a, b) => a.time - b.time || (a.isCall === b.isCall ? 0 : a.isCall ? -1 : 1));
  const head: Entry = { op: -1, isCall: false, time: -1, match: undefined, prev: undefined, next: undefined };
  let last = head;
  for (const e of events) {
    last.next = e;
    e.prev = last;
    last = e;
  }

  const lift = (e: Entry) => {
    // Removes a call and its return from the list.
    (e.prev as Entry).next = e.next;
    if (e.next) e.next.prev = e.prev;
    const r = e.match as Entry;
    (r.prev as Entry).next = r.next;
    if (r.next) r.next.prev = r.prev;
  };
  const unlift = (e: Entry) => {
    const r = e.match as Entry;
    (r.prev as Entry).next = r;
    if (r.next) r.next.prev = r;
    (e.prev as Entry).next = e;
    if (e.next) e.next.prev = e;
  };

  const linearized = new Uint8Array(n);
  const seen = new Set<string>();
  const stack: { entry: Entry; state: string | undefined }[] = [];
  let state = initial;
  let entry = head.next;
  let steps = 0;
  while (head.next !== undefined) {
    if (++steps > MAX_STEPS) return `gave up after ${MAX_STEPS} search steps (${n} operations on one key)`;
    if (entry === undefined) return "unreachable: the walk ran past the last event";
    if (entry.isCall) {
      const op = ops[entry.op] as Op;
      const accepted = op.kind === "set" || op.value === state;
      const next = op.kind === "set" ? op.value : state;
      if (accepted) {
        linearized[entry.op] = 1;
        const memo = `${stateKey(next)}|${linearized.join("")}`;
        if (!seen.has(memo)) {
          seen.add(memo);
          stack.push({ entry, state });
          state = next;
          lift(entry);
          entry = head.next;
          continue;
        }
        linearized[entry.op] = 0;
      }
      entry = entry.next;
    } else {
      // An operation returned before it could be placed: undo the last choice.
      const top = stack.pop();
      if (top === undefined) return describe(ops[entry.op] as Op);
      state = top.state;
      linearized[top.entry.op] = 0;
      unlift(top.entry);
      entry = top.entry.next;
    }
  }
  return true;
}

function stateKey(state: string | undefined): string {
  return state === undefined ? "\u0000absent" : `=${state}`;
}

function describe(op: Op): string {
  const what =
    op.kind === "set"
      ? `set of ${JSON.stringify(op.value)}`
      : `get that read ${op.value === undefined ? "nothing" : JSON.stringify(op.value)}`;
  return `no order of the operations explains the ${what} returning at ${op.ret}`;
}
