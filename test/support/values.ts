/** A value whose every 4 KiB page says which value and page it is, so a mix of two values is visible. */
export function patterned(size: number, tag: number): Uint8Array {
  const v = new Uint8Array(size);
  for (let i = 0; i < size; i++) v[i] = (tag * 31 + (i >> 12)) & 0xff;
  return v;
}

/** Whether `a` holds exactly the bytes of `b`. */
export function same(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && a.length === b.length && Buffer.from(a).equals(Buffer.from(b));
}
