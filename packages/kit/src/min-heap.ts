/** A binary min-heap ordered by a number of each item (a due time): push and pop in O(log n). */
export class MinHeap<T> {
  private items: T[] = [];

  constructor(private readonly keyOf: (item: T) => number) {}

  get size(): number {
    return this.items.length;
  }

  /** The smallest item, without removing it. */
  peek(): T | undefined {
    return this.items[0];
  }

  push(item: T): void {
    const h = this.items;
    const k = this.keyOf(item);
    h.push(item);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = h[p] as T;
      if (this.keyOf(parent) <= k) break;
      h[i] = parent;
      i = p;
    }
    h[i] = item;
  }

  /** Removes and returns the smallest item. */
  pop(): T | undefined {
    const h = this.items;
    const top = h[0];
    const last = h.pop();
    if (last === undefined || h.length === 0) return top;
    const k = this.keyOf(last);
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      let mk = k;
      if (l < h.length && this.keyOf(h[l] as T) < mk) {
        m = l;
        mk = this.keyOf(h[l] as T);
      }
      if (r < h.length && this.keyOf(h[r] as T) < mk) m = r;
      if (m === i) break;
      h[i] = h[m] as T;
      i = m;
    }
    h[i] = last;
    return top;
  }

  clear(): void {
    this.items = [];
  }
}
