/**
 * Typed configuration from environment variables, parsed once at start.
 *
 * A spec maps each variable name to a parser; `loadConfig` returns an object
 * typed from the spec or throws a {@link ConfigError} naming every bad variable.
 */

/** Parses one variable's raw value; `undefined` when the variable is unset or empty. */
export interface EnvVar<T> {
  readonly parse: (raw: string | undefined, name: string) => T;
  readonly describe: string;
}

/** Raised when one or more variables are missing or invalid; the message names each. */
export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

class VarError extends Error {}

function optional<T>(
  fallback: T | undefined,
  parse: (raw: string, name: string) => T,
  describe: string,
): EnvVar<T> {
  return {
    describe,
    parse(raw, name) {
      if (raw === undefined || raw === "") {
        if (fallback === undefined) throw new VarError(`${name} is required (${describe})`);
        return fallback;
      }
      return parse(raw, name);
    },
  };
}

/** Environment variable parsers. Each takes a default; without one the variable is required. */
export const env = {
  string(fallback?: string): EnvVar<string> {
    return optional(fallback, (raw) => raw, "a string");
  },
  int(
    fallback?: number,
    { min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER } = {},
  ): EnvVar<number> {
    return optional(
      fallback,
      (raw, name) => {
        if (!/^-?\d+$/.test(raw.trim()))
          throw new VarError(`${name}=${JSON.stringify(raw)} is not an integer`);
        const n = Number(raw);
        if (n < min || n > max) throw new VarError(`${name}=${raw} is outside ${min}..${max}`);
        return n;
      },
      `an integer in ${min}..${max}`,
    );
  },
  /** A TCP port; 0 asks the OS for a free one. */
  port(fallback?: number): EnvVar<number> {
    return optional(
      fallback,
      (raw, name) => {
        const v = raw.trim();
        if (!/^\d+$/.test(v) || Number(v) > 65535)
          throw new VarError(`${name}=${JSON.stringify(raw)} is not a valid port (0..65535)`);
        return Number(v);
      },
      "a TCP port 0..65535",
    );
  },
  bool(fallback?: boolean): EnvVar<boolean> {
    return optional(
      fallback,
      (raw, name) => {
        const v = raw.trim().toLowerCase();
        if (["1", "true", "yes", "on"].includes(v)) return true;
        if (["0", "false", "no", "off"].includes(v)) return false;
        throw new VarError(`${name}=${JSON.stringify(raw)} is not a boolean (true/false)`);
      },
      "true or false",
    );
  },
  oneOf<const T extends string>(choices: readonly T[], fallback?: T): EnvVar<T> {
    return optional(
      fallback,
      (raw, name) => {
        if (!(choices as readonly string[]).includes(raw))
          throw new VarError(`${name}=${JSON.stringify(raw)} is not one of ${choices.join(", ")}`);
        return raw as T;
      },
      `one of ${choices.join(", ")}`,
    );
  },
  /** Comma-separated list. */
  list(fallback?: string[]): EnvVar<string[]> {
    return optional(
      fallback,
      (raw) =>
        raw
          .split(",")
          .map((s) => s.trim())
          .filter((s) => s !== ""),
      "a comma-separated list",
    );
  },
  /** Duration in milliseconds: `250`, `250ms`, `5s`, `2m`, `1h`. */
  duration(fallback?: number): EnvVar<number> {
    return optional(
      fallback,
      (raw, name) => {
        const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(raw.trim());
        if (!m) throw new VarError(`${name}=${JSON.stringify(raw)} is not a duration (e.g. 500ms, 5s, 2m)`);
        const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? "ms"] ?? 1;
        return Number(m[1]) * unit;
      },
      "a duration such as 500ms, 5s or 2m",
    );
  },
  /** A URL with one of the given schemes. */
  url(fallback?: string, schemes: readonly string[] = ["http:", "https:"]): EnvVar<string> {
    return optional(
      fallback,
      (raw, name) => {
        let u: URL;
        try {
          u = new URL(raw);
        } catch {
          throw new VarError(`${name}=${JSON.stringify(raw)} is not a URL`);
        }
        if (!schemes.includes(u.protocol))
          throw new VarError(`${name}=${JSON.stringify(raw)} must use ${schemes.join(" or ")}`);
        return raw;
      },
      `a URL (${schemes.join(", ")})`,
    );
  },
};

export type ConfigSpec = Record<string, EnvVar<unknown>>;
export type ConfigOf<S extends ConfigSpec> = {
  readonly [K in keyof S]: S[K] extends EnvVar<infer T> ? T : never;
};

/** Parses every variable of the spec from `source`; throws one ConfigError listing all problems. */
export function loadConfig<S extends ConfigSpec>(
  spec: S,
  source: NodeJS.ProcessEnv = process.env,
): ConfigOf<S> {
  const out: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [name, v] of Object.entries(spec)) {
    try {
      out[name] = v.parse(source[name], name);
    } catch (e) {
      if (e instanceof VarError) problems.push(e.message);
      else throw e;
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return out as ConfigOf<S>;
}

/**
 * Like {@link loadConfig}, but on a bad value prints the problem to stderr and exits
 * with status 78 (EX_CONFIG), before anything else has started.
 */
export function loadConfigOrExit<S extends ConfigSpec>(spec: S, service: string): ConfigOf<S> {
  try {
    return loadConfig(spec);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(
        `${JSON.stringify({ level: "fatal", service, msg: e.message, variables: e.problems })}\n`,
      );
      process.exit(78);
    }
    throw e;
  }
}

/** Variables every service reads. */
export const commonConfig = {
  NATS_URL: env.string("nats://127.0.0.1:4222"),
  GRPC_HOST: env.string("127.0.0.1"),
  OPS_HOST: env.string("127.0.0.1"),
  LOG_LEVEL: env.oneOf(["trace", "debug", "info", "warn", "error", "fatal", "silent"], "info"),
  SHUTDOWN_TIMEOUT: env.duration(8000),
  PARTITIONS: env.int(16, { min: 1, max: 1024 }),
} satisfies ConfigSpec;
