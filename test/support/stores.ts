import type { KvStore } from "../../src/store/kv-store.js";

/**
 * A store that forwards every call to `inner` except those in `overrides`:
 * tests wrap a real store to hold or break one operation.
 */
export function wrapping(inner: KvStore, overrides: Partial<KvStore>): KvStore {
  const getStream = inner.getStream?.bind(inner);
  const setStream = inner.setStream?.bind(inner);
  return {
    // Streamed reads and writes pass through too, unless a test overrides get or set (the dispatcher prefers the streams).
    ...(getStream !== undefined && overrides.get === undefined ? { getStream } : {}),
    ...(setStream !== undefined && overrides.set === undefined ? { setStream } : {}),
    get: (key, cancel) => inner.get(key, cancel),
    getVersioned: (key, cancel) => inner.getVersioned(key, cancel),
    setIf: (key, value, condition, cancel) => inner.setIf(key, value, condition, cancel),
    set: (key, value, cancel) => inner.set(key, value, cancel),
    delete: (key, cancel) => inner.delete(key, cancel),
    exists: (key, cancel) => inner.exists(key, cancel),
    list: (request, cancel) => inner.list(request, cancel),
    clear: () => inner.clear(),
    close: () => inner.close(),
    ...overrides,
  };
}
