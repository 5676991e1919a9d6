/**
 * Durable timers: each timer is one key in a JetStream KV bucket (so it
 * survives restarts of the service and of NATS), and every replica keeps them
 * in a min-heap fed by a watch on the bucket (so a million pending cost
 * O(log n) each and nothing polls the store). A tick fires what is due; a
 * fired timer is removed, or replaced by its next occurrence, by
 * compare-and-set, so a timer rescheduled while it fired keeps the new time.
 *
 * Several replicas watch the same bucket and may fire the same timer: the
 * firing must be idempotent (deterministic message ids), and only one
 * replica's compare-and-set wins.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm, type KV, type KvEntry, type KvWatchEntry } from "@nats-io/kv";
import type { Logger } from "./logger.js";
import { MinHeap } from "./min-heap.js";

export interface TimerEntry<P> {
  dueMs: number;
  payload: P;
}

/** What a firing decides: remove the timer, or keep it for its next occurrence. */
export type FireResult<P> = { next?: TimerEntry<P> } | undefined;

export interface TimerOptions<P> {
  bucket: string;
  replicas?: number;
  /** How often due timers are looked for, in ms (lateness is at most about this). */
  tickMs?: number;
  /** Timers fired at once, at most. */
  concurrency?: number;
  clock?: () => number;
  logger: Logger;
  fire: (key: string, entry: TimerEntry<P>) => Promise<FireResult<P>>;
}

interface Node {
  dueMs: number;
  key: string;
  revision: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export class DurableTimers<P> {
  /** The current node of every stored timer (heap nodes of older revisions are stale). */
  private readonly live = new Map<string, Node>();
  private readonly heap = new MinHeap<Node>((n) => n.dueMs);
  private readonly firing = new Set<string>();
  private readonly retryAt = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private stopWatch: (() => void) | undefined;
  private stopped = false;
  private loaded = false;
  /** Lateness (fired-at − due) of every firing, for a histogram. */
  onFired: ((latenessMs: number) => void) | undefined;

  private constructor(
    private readonly kv: KV,
    private readonly opts: TimerOptions<P>,
  ) {}

  static async start<P>(nc: NatsConnection, opts: TimerOptions<P>): Promise<DurableTimers<P>> {
    const kv = await new Kvm(nc).create(opts.bucket, { history: 1, replicas: opts.replicas ?? 1 });
    const t = new DurableTimers<P>(kv, opts);
    await t.watch();
    t.schedule();
    return t;
  }

  get size(): number {
    return this.live.size;
  }

  /** True once every timer stored at start is in the heap. */
  get ready(): boolean {
    return this.loaded;
  }

  private get now(): number {
    return (this.opts.clock ?? Date.now)();
  }

  /** Creates or replaces the timer `key`. */
  async set(key: string, entry: TimerEntry<P>): Promise<void> {
    await this.kv.put(key, enc.encode(JSON.stringify(entry)));
  }

  /** Removes the timer `key` (nothing if there is none). */
  async cancel(key: string): Promise<void> {
    if (this.live.has(key)) await this.kv.delete(key);
  }

  /** When the timer `key` is due as this replica last saw it (no store read; may lag a write). */
  dueOf(key: string): number | undefined {
    return this.live.get(key)?.dueMs;
  }

  async get(key: string): Promise<TimerEntry<P> | undefined> {
    const e = await this.kv.get(key);
    return e === null || e.operation !== "PUT" || e.value.length === 0
      ? undefined
      : (JSON.parse(dec.decode(e.value)) as TimerEntry<P>);
  }

  private async watch(): Promise<void> {
    if ((await this.kv.status()).values === 0) this.loaded = true;
    const w = await this.kv.watch();
    this.stopWatch = () => w.stop();
    void (async () => {
      for await (const e of w) {
        this.apply(e);
        // The watch first replays what is stored; `delta` 0 is its last entry.
        if (e.delta === 0) this.loaded = true;
      }
    })();
  }

  private apply(e: KvEntry | KvWatchEntry): void {
    if (e.operation !== "PUT" || e.value.length === 0) {
      this.live.delete(e.key);
      return;
    }
    const held = this.live.get(e.key);
    if (held !== undefined && held.revision >= e.revision) return;
    let entry: TimerEntry<P>;
    try {
      entry = JSON.parse(dec.decode(e.value)) as TimerEntry<P>;
    } catch {
      this.opts.logger.warn({ key: e.key }, "unreadable timer ignored");
      return;
    }
    const node: Node = { dueMs: entry.dueMs, key: e.key, revision: e.revision };
    this.live.set(e.key, node);
    this.heap.push(node);
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.tick().then(
        () => this.schedule(),
        (err: unknown) => {
          this.opts.logger.error({ err }, "timer tick failed");
          this.schedule();
        },
      );
    }, this.opts.tickMs ?? 100);
  }

  /** Fires every due timer (bounded concurrency); exposed for tests with a fake clock. */
  async tick(): Promise<void> {
    const now = this.now;
    const due: Node[] = [];
    const later: Node[] = [];
    const max = this.opts.concurrency ?? 256;
    for (let top = this.heap.peek(); top !== undefined && top.dueMs <= now && due.length < max;) {
      this.heap.pop();
      const node = top;
      top = this.heap.peek();
      // Stale node: the timer was removed or replaced since.
      if (this.live.get(node.key) !== node) continue;
      if (this.firing.has(node.key) || (this.retryAt.get(node.key) ?? 0) > now) {
        later.push(node);
        continue;
      }
      due.push(node);
    }
    for (const n of later) this.heap.push(n);
    // Rescheduled timers leave stale nodes behind: rebuild when they outnumber the live ones.
    if (this.heap.size > 2 * this.live.size + 1024) {
      this.heap.clear();
      for (const n of this.live.values()) this.heap.push(n);
    }
    await Promise.all(due.map((n) => this.fireOne(n, now)));
  }

  private async fireOne(n: Node, now: number): Promise<void> {
    this.firing.add(n.key);
    try {
      const e = await this.kv.get(n.key);
      if (e === null || e.operation !== "PUT" || e.revision !== n.revision) return; // moved meanwhile
      const entry = JSON.parse(dec.decode(e.value)) as TimerEntry<P>;
      const result = await this.opts.fire(n.key, entry);
      this.onFired?.(Math.max(0, now - entry.dueMs));
      try {
        if (result?.next !== undefined) {
          await this.kv.update(n.key, enc.encode(JSON.stringify(result.next)), n.revision);
        } else {
          await this.kv.delete(n.key, { previousSeq: n.revision });
        }
      } catch {
        // Another replica settled it, or it was rescheduled while firing: the newer entry
        // stands (the watch brings it). If nothing moved, the write itself failed: fire again
        // later (firings are idempotent).
        if (this.live.get(n.key) === n) {
          this.retryAt.set(n.key, now + 1000);
          this.heap.push(n);
        }
      }
      this.retryAt.delete(n.key);
    } catch (err) {
      this.opts.logger.warn({ err, key: n.key }, "timer firing failed; retrying in 1 s");
      this.retryAt.set(n.key, now + 1000);
      this.heap.push(n);
    } finally {
      this.firing.delete(n.key);
    }
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.stopWatch?.();
  }
}
