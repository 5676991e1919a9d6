/**
 * The floor under any gRPC figure on this machine: a grpc-js server that answers every call at
 * once with 600 bytes (about a profile), in its own process, called over loopback the way the
 * benchmarks call the services. What it cannot beat, no service behind grpc-js can.
 *
 *   pnpm exec tsx bench/grpc-floor.ts   (prints GRPC_FLOOR {json})
 */
import * as grpc from "@grpc/grpc-js";
import { fork } from "node:child_process";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { sleep } from "@kairos/testkit";
import { summarize } from "./stats.js";

const raw = (b: Buffer) => b;
const definition = {
  echo: {
    path: "/kairos.bench.Floor/Echo",
    requestStream: false,
    responseStream: false,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  },
} satisfies grpc.ServiceDefinition;

const self = fileURLToPath(import.meta.url);

export interface GrpcFloor {
  closed_loop: { callers: number; per_s: number };
  paced: ({ rate_per_s: number } & ReturnType<typeof summarize>)[];
}

/** Measures the no-op server at each rate (latency from when each call was due) and closed-loop. */
export async function measureGrpcFloor(rates: readonly number[], seconds: number): Promise<GrpcFloor> {
  const child = fork(self, ["serve"], { execArgv: process.execArgv, stdio: "ignore" });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.once("message", (m) => resolve(m as number));
      child.once("exit", (code) => reject(new Error(`grpc floor server exited (${code})`)));
    });
    const Client = grpc.makeGenericClientConstructor(definition, "Floor");
    const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as {
      echo(b: Buffer, cb: (e: grpc.ServiceError | null) => void): void;
      close(): void;
    };
    const request = Buffer.alloc(40);
    const call = () => new Promise<void>((res, rej) => client.echo(request, (e) => (e ? rej(e) : res())));
    for (let i = 0; i < 2000; i++) await call();
    const paced: GrpcFloor["paced"] = [];
    for (const rate of rates) {
      const took: number[] = [];
      const calls: Promise<void>[] = [];
      const start = performance.now();
      for (let i = 0; i < rate * seconds; i++) {
        const due = start + (i * 1000) / rate;
        const wait = due - performance.now();
        if (wait > 1) await sleep(wait);
        calls.push(call().then(() => void took.push(performance.now() - due)));
      }
      await Promise.all(calls);
      paced.push({ rate_per_s: rate, ...summarize(took) });
    }
    const callers = 32;
    let n = 0;
    const start = performance.now();
    await Promise.all(
      Array.from({ length: callers }, async () => {
        while (performance.now() - start < seconds * 1000) {
          await call();
          n++;
        }
      }),
    );
    client.close();
    return { closed_loop: { callers, per_s: Math.round(n / ((performance.now() - start) / 1000)) }, paced };
  } finally {
    child.kill();
  }
}

if (process.argv[2] === "serve") {
  const server = new grpc.Server();
  const answer = Buffer.alloc(600);
  server.addService(definition, {
    echo: (_call: unknown, cb: (e: null, r: Buffer) => void) => cb(null, answer),
  });
  server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
    if (err) throw err;
    process.send!(port);
  });
} else if (process.argv[1] === self) {
  const floor = await measureGrpcFloor([1000, 5000], Number(process.env.BENCH_SECONDS ?? 5));
  console.log(`GRPC_FLOOR ${JSON.stringify(floor)}`);
}
