/** The `code` a promise rejects with (a KvError's, say), or undefined when it resolves. */
export async function codeOf(work: Promise<unknown>): Promise<string | undefined> {
  try {
    await work;
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
}
