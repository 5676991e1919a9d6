/**
 * Live subscribers by identifier: a browser's Server-Sent Events stream, an app
 * back end's gRPC `Subscribe`. `publish` pushes an action to every subscriber
 * of any of its destinations (once per subscriber, even when several of its
 * identifiers match) and says how many got it.
 */
import type { Action, Destination } from "./action.js";

export type Push = (action: Action) => void;

const keyOf = (workspace: string, type: string, value: string) => `${workspace}\u0000${type}\u0000${value}`;

export class LiveRegistry {
  private readonly byKey = new Map<string, Set<Push>>();
  private count = 0;

  /** Registers `push` for each identifier; returns the function that removes it. */
  subscribe(workspace: string, identifiers: readonly Destination[], push: Push): () => void {
    const keys = identifiers.map((i) => keyOf(workspace, i.type, i.value));
    for (const k of keys) {
      let set = this.byKey.get(k);
      if (set === undefined) this.byKey.set(k, (set = new Set()));
      set.add(push);
    }
    this.count++;
    let removed = false;
    return () => {
      if (removed) return;
      removed = true;
      this.count--;
      for (const k of keys) {
        const set = this.byKey.get(k);
        set?.delete(push);
        if (set?.size === 0) this.byKey.delete(k);
      }
    };
  }

  /** Pushes to every matching subscriber; returns how many received it. */
  publish(action: Action): number {
    const targets = new Set<Push>();
    for (const d of action.destinations) {
      for (const p of this.byKey.get(keyOf(action.workspace, d.type, d.value)) ?? []) targets.add(p);
    }
    for (const p of targets) p(action);
    return targets.size;
  }

  /** Subscribers connected to this replica. */
  get size(): number {
    return this.count;
  }
}
