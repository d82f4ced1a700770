/** Log levels, most severe first. */
export const LogLevel = { error: 0, warn: 1, info: 2, debug: 3 } as const;
export type LogLevel = keyof typeof LogLevel;

/** Structured fields of a log line. Never put a value's bytes here. */
export type LogFields = Record<string, string | number | boolean | undefined>;

/** A minimal structured logger: one line per event, `key=value` pairs. */
export interface Logger {
  error(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  debug(msg: string, fields?: LogFields): void;
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
export function createLogger(level: LogLevel = "info", sink: (line: string) => void = (l) => console.error(l)): Logger {
  const max = LogLevel[level];
  const at = (lvl: LogLevel) => (msg: string, fields?: LogFields) => {
    if (LogLevel[lvl] <= max) sink(format(lvl, msg, fields));
  };
  return { error: at("error"), warn: at("warn"), info: at("info"), debug: at("debug") };
}

/** A logger that drops everything. */
export const silentLogger: Logger = createLogger("error", () => {});
