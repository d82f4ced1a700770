/** What a conditional write requires: the key at exactly this version, or the key absent. */
export type WriteCondition =
  | { readonly ifVersion: number; readonly ifAbsent?: undefined }
  | { readonly ifAbsent: true };

/** What the two conditions are called where they were given, for the reason a bad pair is refused with. */
export interface ConditionNames {
  readonly version: string;
  readonly absent: string;
}

/**
 * The condition that `ifVersion` and `ifAbsent` ask for (undefined: none),
 * or why they cannot be honoured: both at once, or a version no key can have
 * (not a whole number from 0 to 2^53). One check for the server's codec, the
 * HTTP gateway and the client, each naming the fields as its callers do.
 */
export function writeCondition(
  ifVersion: number | undefined,
  ifAbsent: boolean | undefined,
  names: ConditionNames,
): WriteCondition | string | undefined {
  if (ifVersion !== undefined && ifAbsent) return `a set takes ${names.version} or ${names.absent}, not both`;
  if (ifAbsent) return { ifAbsent: true };
  if (ifVersion === undefined) return undefined;
  if (!Number.isSafeInteger(ifVersion) || ifVersion < 0) {
    return `${names.version} must be a version from 0 to 2^53, which every version is, got ${ifVersion}`;
  }
  return { ifVersion };
}
