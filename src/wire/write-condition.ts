/** What a conditional write requires: the key at exactly this version, or the key absent. */
export type WriteCondition =
  | { readonly ifVersion: number; readonly ifAbsent?: undefined }
  | { readonly ifAbsent: true };
