/** Milliseconds per unit a duration may be written in. */
const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;

/**
 * The ms a duration such as `30s`, `1.5h`, `250ms` or `7d` names (units ms,
 * s, m, h, d; decimals allowed, rounded to the ms). Throws a RangeError
 * naming what was wrong for anything else, a bare number included: a unit
 * is required so that `--ttl 30` cannot mean 30 ms to one reader and 30 s
 * to another.
 */
export function parseDuration(text: string): number {
  const m = DURATION.exec(text);
  if (m === null) {
    throw new RangeError(
      `${JSON.stringify(text)} is not a duration: give a number and a unit (ms, s, m, h, d), as 30s`,
    );
  }
  const ms = Math.round(Number(m[1]) * (UNIT_MS[m[2] as string] as number));
  if (ms < 1) throw new RangeError(`${JSON.stringify(text)} is shorter than 1 ms`);
  return ms;
}
