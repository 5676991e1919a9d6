/**
 * Collects items into batches: a batch goes out when it holds `maxSize` items or
 * when its first item has waited `maxWaitMs`, whichever comes first. Each caller
 * gets the result for its own item. A flush that throws rejects every item of
 * that batch with the same error.
 */
export interface BatchPolicy {
  maxSize: number;
  maxWaitMs: number;
}

interface Pending<T, R> {
  item: T;
  resolve: (r: R) => void;
  reject: (e: unknown) => void;
}

export class Batcher<T, R> {
  private pending: Pending<T, R>[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly policy: BatchPolicy,
    /** Delivers one batch; returns one result per item, in order. */
    private readonly flushFn: (items: T[]) => Promise<R[]>,
  ) {
    if (policy.maxSize < 1) throw new Error(`batch size must be at least 1, got ${policy.maxSize}`);
  }

  add(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.pending.push({ item, resolve, reject });
      if (this.pending.length >= this.policy.maxSize) this.flush();
      else this.timer ??= setTimeout(() => this.flush(), this.policy.maxWaitMs);
    });
  }

  /** Sends what is collected now. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    const run = (async () => {
      try {
        const results = await this.flushFn(batch.map((p) => p.item));
        if (results.length !== batch.length) {
          throw new Error(`a batch of ${batch.length} returned ${results.length} results`);
        }
        batch.forEach((p, i) => p.resolve(results[i] as R));
      } catch (e) {
        for (const p of batch) p.reject(e);
      }
    })();
    this.inFlight.add(run);
    void run.finally(() => this.inFlight.delete(run));
  }

  /** Flushes what is collected and waits for every batch in flight. */
  async drain(): Promise<void> {
    this.flush();
    await Promise.all([...this.inFlight]);
  }

  get size(): number {
    return this.pending.length;
  }
}
