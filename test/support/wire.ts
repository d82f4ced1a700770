import { expect } from "bun:test";
import { fromBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { req_envelopeSchema } from "../../src/gen/kv_pb.js";
import { type ErrorCode, KvError } from "../../src/wire/errors.js";

/** A field of a hand-built message: varint for numbers, length-delimited for bytes. */
export type Field = [field: number, value: number | Uint8Array];

/**
 * Encodes a message field by field. Unlike generated code it ignores proto2
 * `required`, so tests can build the incomplete messages a peer might send.
 */
export function msg(...fields: Field[]): Uint8Array {
  const w = new BinaryWriter();
  for (const [no, v] of fields) {
    if (typeof v === "number") w.tag(no, WireType.Varint).int32(v);
    else w.tag(no, WireType.LengthDelimited).bytes(v);
  }
  return w.finish();
}

/** A frame body without its varint length prefix. */
export function body(frame: Uint8Array): Uint8Array {
  let p = 0;
  while ((frame[p] as number) & 0x80) p++;
  return frame.subarray(p + 1);
}

/** Asserts that `fn` throws a KvError with `code`. */
export function expectKvError(fn: () => unknown, code: ErrorCode): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(KvError);
  expect((caught as KvError).code).toBe(code);
}

/** Asserts that `p` rejects because the server answered `internal`. */
export async function expectInternal(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(KvError);
  // The server answered `internal`, and said why with a specific code.
  expect((caught as KvError).message).toStartWith("server answered");
  expect((caught as KvError).code).toBe(code);
}

/** A response as the generated code reads it: its type, status, and failure fields, whatever the response. */
export interface AnyResponse {
  type: number;
  status: number | undefined;
  code: string | undefined;
  reason: string | undefined;
  identity?: string;
}

/**
 * Decodes a response frame body with the generated code (an implementation
 * apart from the client's codec) into the fields every response shares.
 */
export function decodeAny(frame: Uint8Array | null): AnyResponse {
  if (frame === null) throw new Error("the connection closed before a response");
  const env = fromBinary(req_envelopeSchema, frame);
  const inner =
    env.setResp ?? env.getResp ?? env.deleteResp ?? env.existsResp ?? env.listResp ?? env.clearResp ?? env.authResp;
  const out: AnyResponse = { type: env.type, status: inner?.error, code: inner?.code, reason: inner?.reason };
  if (env.authResp?.identity !== undefined) out.identity = env.authResp.identity;
  return out;
}

/** A message body framed with its varint length prefix. */
export function frame(message: Uint8Array): Uint8Array {
  const w = new BinaryWriter();
  w.bytes(message);
  return w.finish();
}

/** The KvError `work` rejects with; fails the test if it resolves or rejects with anything else. */
export async function rejection(work: Promise<unknown>): Promise<KvError> {
  try {
    await work;
  } catch (err) {
    if (err instanceof KvError) return err;
    throw err;
  }
  throw new Error("expected the call to reject");
}
