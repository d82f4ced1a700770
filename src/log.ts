/** Log levels, most severe first. */
export const LogLevel = { error: 0, warn: 1, info: 2, debug: 3 } as const;
export type LogLevel = keyof typeof LogLevel;

/** Structured fields of a log line. Never put a value's bytes here. */
export type LogFields = Record<string, string | number | boolean | undefined>;

/** Line formats: `text` is logfmt-style `key=value`, `json` one JSON object per line (CloudWatch parses it). */
export const LogFormat = { text: "text", json: "json" } as const;
export type LogFormat = (typeof LogFormat)[keyof typeof LogFormat];

/** A minimal structured logger: one line per event. */
export interface Logger {
  error(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  debug(msg: string, fields?: LogFields): void;
}

function formatJson(level: LogLevel, msg: string, fields?: LogFields): string {
  const out: Record<string, string | number | boolean> = { time: new Date().toISOString(), level, msg };
  if (fields) for (const [k, v] of Object.entries(fields)) if (v !== undefined && !(k in out)) out[k] = v;
  return JSON.stringify(out);
}

function format(level: LogLevel, msg: string, fields?: LogFields): string {
  let line = `${new Date().toISOString()} ${level} ${msg}`;
  if (fields) {
    for (const [k, v] of Object.entries(fields)) {
      if (v === undefined) continue;
      const s = String(v);
      line += ` ${k}=${/[\s"=]/.test(s) ? JSON.stringify(s) : s}`;
    }
  }
  return line;
}

/** A logger writing to stderr, dropping lines below `level`. */
export function createLogger(
  level: LogLevel = "info",
  sink: (line: string) => void = (l) => console.error(l),
  lineFormat: LogFormat = LogFormat.text,
): Logger {
  const max = LogLevel[level];
  const render = lineFormat === LogFormat.json ? formatJson : format;
  const at = (lvl: LogLevel) => (msg: string, fields?: LogFields) => {
    if (LogLevel[lvl] <= max) sink(render(lvl, msg, fields));
  };
  return { error: at("error"), warn: at("warn"), info: at("info"), debug: at("debug") };
}

/** A logger that drops everything. */
export const silentLogger: Logger = createLogger("error", () => {});

/**
 * The AWS SDK's logger interface, writing through `log`: the SDK's warnings
 * (deprecations, timeouts) become our warn lines, in our format, with
 * `source=aws-sdk`. The SDK logs every failed command at error, expected ones
 * included (a table not created yet); the server logs the failures that
 * matter itself, so those, and the SDK's info chatter, go to debug.
 */
export function awsSdkLogger(log: Logger): {
  trace(...content: unknown[]): void;
  debug(...content: unknown[]): void;
  info(...content: unknown[]): void;
  warn(...content: unknown[]): void;
  error(...content: unknown[]): void;
} {
  const text = (content: unknown[]) =>
    content.map((c) => (typeof c === "string" ? c : c instanceof Error ? c.message : JSON.stringify(c))).join(" ");
  return {
    trace: () => {},
    debug: (...c) => log.debug(text(c), { source: "aws-sdk" }),
    info: (...c) => log.debug(text(c), { source: "aws-sdk" }),
    warn: (...c) => log.warn(text(c), { source: "aws-sdk" }),
    error: (...c) => log.debug(text(c), { source: "aws-sdk" }),
  };
}
