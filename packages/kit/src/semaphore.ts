/** A counting semaphore bounding how much work is in flight. */
export class Semaphore {
  private waiters: (() => void)[] = [];
  private used = 0;

  constructor(readonly size: number) {
    if (size < 1) throw new RangeError(`semaphore size must be >= 1, got ${size}`);
  }

  get inUse(): number {
    return this.used;
  }

  /** Resolves once a slot is free; the caller must `release()` it. */
  acquire(): Promise<void> {
    if (this.used < this.size) {
      this.used++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.used--;
  }

  /** Resolves when every slot is free. */
  async idle(): Promise<void> {
    while (this.used > 0) await new Promise((r) => setTimeout(r, 5));
  }
}
