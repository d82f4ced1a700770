/**
 * kvs-client: the client of the kvs key-value service, for Node ≥ 20 and Bun.
 * One connection per {@link KvClient}, pipelined; with `reconnect: true` it
 * reconnects after a server's drain or crash.
 */

export { ErrorCode, isKvError, KvError } from "../src/wire/errors.js";
export type { WriteCondition } from "../src/wire/write-condition.js";
export {
  type Bytes,
  type ClientTlsOptions,
  DEFAULT_PORT,
  DEFAULT_TLS_PORT,
  type ExpiryOptions,
  KvClient,
  type KvClientOptions,
  type ListOptions,
  type ListPage,
  parseServerUrl,
  type RequestOptions,
  type SetOptions,
  type VersionedValue,
} from "./kv-client.js";
