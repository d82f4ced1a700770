import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { root } from "./support/process.js";

/** Every Markdown page users read: the README, docs/, and the client's README. */
const PAGES = [
  join(root, "README.md"),
  join(root, "client", "README.md"),
  ...readdirSync(join(root, "docs"))
    .filter((f) => f.endsWith(".md"))
    .map((f) => join(root, "docs", f)),
];

/** Relative link targets in `text`: `[label](target)`, without the external ones and bare anchors. */
function relativeLinks(text: string): string[] {
  const prose = text.replace(/```[\s\S]*?```/g, "");
  return [...prose.matchAll(/\]\(([^)\s]+)\)/g)]
    .map((m) => m[1] as string)
    .filter((target) => !/^[a-z]+:/i.test(target) && !target.startsWith("#"));
}

describe("the docs", () => {
  test("every relative link in the README, docs/ and the client's README names a file that exists", () => {
    const broken: string[] = [];
    let checked = 0;
    for (const page of PAGES) {
      for (const target of relativeLinks(readFileSync(page, "utf8"))) {
        checked++;
        const path = resolve(dirname(page), decodeURIComponent(target.split("#")[0] as string));
        if (!existsSync(path)) broken.push(`${relative(root, page)}: ${target}`);
      }
    }
    expect(broken).toEqual([]);
    expect(checked).toBeGreaterThan(10);
  });
});
