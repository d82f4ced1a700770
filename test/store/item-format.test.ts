import { describe, expect, test } from "bun:test";
import { branchKeyPk } from "../../src/store/branch-key-store.js";
import { chunkAad, chunkPk, valueAad } from "../../src/store/item-format.js";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const key = new TextEncoder().encode("user:42");
const ver = Uint8Array.from({ length: 16 }, (_, i) => i * 7);
const EXPIRES = 1_764_806_400_123;

// These bytes are in every stored item (keys) or authenticate it (AADs): items written by earlier
// releases read back only while they stay the same. Pinned as the DataView encoding produced them.
describe("the stored item format", () => {
  test("a value's AAD, with and without an expiry, is the same bytes as stored items were sealed with", () => {
    expect(hex(valueAad("kvs-table", key))).toBe("6b76732f76616c75650100096b76732d7461626c6500000007757365723a3432");
    expect(hex(valueAad("kvs-table", key, EXPIRES))).toBe(
      "6b76732f76616c75650100096b76732d7461626c6500000007757365723a34320000019ae6a8987b",
    );
  });

  test("a chunk's AAD, with and without an expiry, is the same bytes as stored chunks were sealed with", () => {
    const head = "6b76732f6368756e6b0200096b76732d7461626c6500000007757365723a3432";
    const tail = "00070e151c232a31383f464d545b6269000000030000000500000000042c1dfb";
    expect(hex(chunkAad("kvs-table", key, ver, 3, 5, 70_000_123))).toBe(head + tail);
    expect(hex(chunkAad("kvs-table", key, ver, 3, 5, 70_000_123, EXPIRES))).toBe(`${head}${tail}0000019ae6a8987b`);
  });

  test("chunk and branch-key partition keys are the same bytes as stored items carry", () => {
    expect(hex(chunkPk(ver, 0x01020304))).toBe("0100070e151c232a31383f464d545b626901020304");
    expect(hex(branchKeyPk(0x0a0b0c0d))).toBe("020a0b0c0d");
  });
});
