/** Runs a program as a child process, capturing its output, for tests and the dev runner. */
import { spawn, type ChildProcess } from "node:child_process";

export interface ChildOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Name used in errors and echoed output. */
  name?: string;
  /** Echo output to the parent's stderr, prefixed by name. */
  echo?: boolean;
  /**
   * Its own process group: a Ctrl-C in the terminal (SIGINT to the foreground group) does not
   * reach it, so the parent stops it when it chooses (e.g. NATS after the services have drained).
   */
  ownGroup?: boolean;
}

/** A running child whose output lines are kept for `waitForLine`. */
export class Child implements AsyncDisposable {
  readonly lines: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private listeners = new Set<(line: string) => void>();

  constructor(
    readonly proc: ChildProcess,
    readonly name: string,
    echo: boolean,
  ) {
    const onData = (chunk: Buffer, carry: { rest: string }) => {
      const text = carry.rest + chunk.toString("utf8");
      const parts = text.split("\n");
      carry.rest = parts.pop() ?? "";
      for (const line of parts) {
        this.lines.push(line);
        // Keep the tail only: long-running children (benchmarks) must not grow the parent.
        if (this.lines.length > 5000) this.lines.splice(0, 1000);
        if (echo) process.stderr.write(`[${name}] ${line}\n`);
        for (const l of this.listeners) l(line);
      }
    };
    const out = { rest: "" };
    const err = { rest: "" };
    proc.stdout?.on("data", (c: Buffer) => onData(c, out));
    proc.stderr?.on("data", (c: Buffer) => onData(c, err));
    this.exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Resolves with the first line (already seen or future) matching `re`. */
  waitForLine(re: RegExp, timeoutMs = 20_000): Promise<string> {
    const seen = this.lines.find((l) => re.test(l));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.listeners.delete(listener);
        reject(
          new Error(
            `${this.name}: no line matching ${re} within ${timeoutMs} ms; output:\n${this.lines.slice(-30).join("\n")}`,
          ),
        );
      }, timeoutMs);
      const listener = (line: string) => {
        if (!re.test(line)) return;
        clearTimeout(timer);
        this.listeners.delete(listener);
        resolve(line);
      };
      this.listeners.add(listener);
      void this.exited.then(({ code, signal }) => {
        if (!this.listeners.has(listener)) return;
        clearTimeout(timer);
        this.listeners.delete(listener);
        reject(
          new Error(
            `${this.name} exited (code ${code}, signal ${signal}) before printing ${re}:\n${this.lines.slice(-30).join("\n")}`,
          ),
        );
      });
    });
  }

  /** Sends a signal and waits for exit; SIGKILLs after `timeoutMs`. */
  async stop(signal: NodeJS.Signals = "SIGTERM", timeoutMs = 15_000) {
    if (!this.running) return this.exited;
    this.proc.kill(signal);
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), timeoutMs);
    const result = await this.exited;
    clearTimeout(timer);
    return result;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop("SIGKILL");
  }
}

/** Starts `command args` with piped output. */
/** Children still running, killed if this process exits without stopping them (a crash, a timeout). */
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const p of live) p.kill("SIGKILL");
});

export function startChild(command: string, args: string[], opts: ChildOptions = {}): Child {
  const proc = spawn(command, args, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ["ignore", "pipe", "pipe"],
    detached: opts.ownGroup ?? false,
  });
  live.add(proc);
  proc.once("exit", () => live.delete(proc));
  return new Child(proc, opts.name ?? command, opts.echo ?? false);
}
