/**
 * Whether a request was sent by a browser on behalf of another site: the
 * check of Go's `http.CrossOriginProtection`. A browser says where a request
 * comes from in `Sec-Fetch-Site` (every current browser) or, failing that,
 * `Origin`; a request with neither is not a browser's (curl, scripts, our
 * clients) and is not cross-site. Without this, any page the user visits
 * could change the store with `<img src="http://localhost:7080/clear">`.
 */
export function isCrossSite(headers: Headers): boolean {
  const site = headers.get("sec-fetch-site");
  if (site !== null) return site !== "same-origin" && site !== "none";
  const origin = headers.get("origin");
  if (origin === null) return false;
  const host = headers.get("host");
  // "null" (a sandboxed frame, a file) or anything that is not a URL is no origin of ours.
  if (!URL.canParse(origin) || host === null) return true;
  return new URL(origin).host !== host;
}
