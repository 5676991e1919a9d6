/** Small statistics for benchmark figures. */

/** The q-quantile (0..1) of `values`, nearest-rank; NaN when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank]!;
}

export interface Summary {
  n: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
}

/** p50/p99/max of latencies given in milliseconds, rounded to 0.01 ms. */
export function summarize(values: readonly number[]): Summary {
  const r = (x: number) => Math.round(x * 100) / 100;
  return {
    n: values.length,
    p50_ms: r(quantile(values, 0.5)),
    p99_ms: r(quantile(values, 0.99)),
    max_ms: r(values.reduce((m, v) => Math.max(m, v), 0)),
  };
}

/** Peak resident set size of a process from /proc, in MiB (VmHWM), or NaN if unknown. */
export function peakRssMiB(pid: number): Promise<number> {
  return statusMiB(pid, "VmHWM");
}

/** Resident set size of a process now, in MiB (VmRSS), or NaN if unknown. */
export function rssMiB(pid: number): Promise<number> {
  return statusMiB(pid, "VmRSS");
}

async function statusMiB(pid: number, field: "VmHWM" | "VmRSS"): Promise<number> {
  const { readFile } = await import("node:fs/promises");
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const kb = new RegExp(`${field}:\\s+(\\d+)\\s+kB`).exec(status)?.[1];
    return kb === undefined ? Number.NaN : Math.round(Number(kb) / 1024);
  } catch {
    return Number.NaN;
  }
}

/** Cumulative bucket counts of one Prometheus histogram series, by upper bound (seconds). */
export async function scrapeHistogram(
  metricsUrl: string,
  name: string,
  labels: string,
): Promise<Map<number, number>> {
  const text = await (await fetch(metricsUrl)).text();
  const out = new Map<number, number>();
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}_bucket{`) || !line.includes(labels)) continue;
    const le = /le="([^"]+)"/.exec(line)?.[1];
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (le !== undefined) out.set(le === "+Inf" ? Number.POSITIVE_INFINITY : Number(le), value);
  }
  return out;
}

/** The q-quantile's bucket upper bound (ms) of the observations between two scrapes. */
export function histogramQuantileMs(
  before: Map<number, number>,
  after: Map<number, number>,
  q: number,
): number {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const total = (after.get(Number.POSITIVE_INFINITY) ?? 0) - (before.get(Number.POSITIVE_INFINITY) ?? 0);
  if (total <= 0) return Number.NaN;
  for (const b of bounds) {
    const n = (after.get(b) ?? 0) - (before.get(b) ?? 0);
    if (n >= q * total) return b * 1000;
  }
  return Number.POSITIVE_INFINITY;
}
