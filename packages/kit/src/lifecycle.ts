/**
 * Graceful shutdown in phases: stop intake, finish or release in-flight work,
 * drain connections, flush telemetry. On SIGTERM/SIGINT the process exits 0 when
 * every step succeeded and 1 otherwise.
 */
import type { Logger } from "./logger.js";

export type ShutdownPhase = "intake" | "work" | "connections" | "telemetry";
const PHASES: ShutdownPhase[] = ["intake", "work", "connections", "telemetry"];

export class Lifecycle {
  private readonly hooks = new Map<ShutdownPhase, { name: string; fn: () => Promise<void> }[]>();
  private stopping: Promise<boolean> | undefined;

  constructor(
    private readonly logger: Logger,
    readonly timeoutMs: number,
  ) {}

  /** Adds a step; steps of one phase run together, phases in order. */
  add(phase: ShutdownPhase, name: string, fn: () => Promise<void> | void): void {
    const list = this.hooks.get(phase) ?? [];
    list.push({ name, fn: async () => fn() });
    this.hooks.set(phase, list);
  }

  get isStopping(): boolean {
    return this.stopping !== undefined;
  }

  /** Runs every step once; resolves true when all succeeded. Later calls share the first run. */
  shutdown(reason: string): Promise<boolean> {
    this.stopping ??= this.run(reason);
    return this.stopping;
  }

  private async run(reason: string): Promise<boolean> {
    this.logger.info({ reason }, "shutting down");
    let ok = true;
    for (const phase of PHASES) {
      const results = await Promise.allSettled((this.hooks.get(phase) ?? []).map((h) => h.fn()));
      results.forEach((r, i) => {
        if (r.status === "rejected") {
          ok = false;
          this.logger.error(
            { err: r.reason, phase, step: this.hooks.get(phase)?.[i]?.name },
            "shutdown step failed",
          );
        }
      });
    }
    this.logger.info({ ok }, "stopped");
    return ok;
  }

  /** Installs SIGTERM/SIGINT handlers that shut down and exit; a hard deadline exits 1. */
  handleSignals(): void {
    const onSignal = (signal: NodeJS.Signals) => {
      if (this.isStopping) return;
      const deadline = setTimeout(() => {
        this.logger.error({ timeoutMs: this.timeoutMs }, "shutdown timed out");
        process.exit(1);
      }, this.timeoutMs + 1500);
      deadline.unref();
      void this.shutdown(signal).then(
        (ok) => {
          this.logger.flush();
          process.exit(ok ? 0 : 1);
        },
        () => process.exit(1),
      );
    };
    process.once("SIGTERM", onSignal);
    process.once("SIGINT", onSignal);
  }
}
