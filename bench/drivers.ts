import { KvClient } from "../client/kv-client.js";

/** One connection of a load driver: `op` runs one request and settles with its answer. */
export interface DriverConnection {
  set(key: Uint8Array, value: Uint8Array): Promise<unknown>;
  get(key: Uint8Array): Promise<unknown>;
  close(): Promise<void>;
}

/** How to talk to one kind of target. */
export interface Driver {
  name: string;
  connect(port: number): Promise<DriverConnection>;
}

/** The service's own client library. */
export const kvsDriver: Driver = {
  name: "kvs",
  async connect(port) {
    const c = await KvClient.connect({ port });
    return { set: (k, v) => c.set(k, v), get: (k) => c.get(k), close: () => c.close() };
  },
};
