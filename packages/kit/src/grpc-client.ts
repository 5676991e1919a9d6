/** A typed grpc-js client built from protobuf-es service descriptors, propagating trace context. */
import { toBinaryFast, fromBinaryFast } from "@kairos/contracts";
import * as grpc from "@grpc/grpc-js";
import { create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { injectTraceContext } from "./telemetry.js";

type In<M> = M extends { input: infer I extends DescMessage } ? MessageInitShape<I> : never;
type Out<M> = M extends { output: infer O extends DescMessage } ? MessageShape<O> : never;

/** Options of one call. */
export interface CallOptions {
  /** Deadline in milliseconds from now. */
  timeoutMs?: number;
  metadata?: grpc.Metadata;
  signal?: AbortSignal;
}

type ClientMethod<M> = M extends { methodKind: "unary" }
  ? (req: In<M>, opts?: CallOptions) => Promise<Out<M>>
  : M extends { methodKind: "server_streaming" }
    ? (req: In<M>, opts?: CallOptions) => AsyncIterable<Out<M>>
    : M extends { methodKind: "client_streaming" }
      ? (reqs: Iterable<In<M>> | AsyncIterable<In<M>>, opts?: CallOptions) => Promise<Out<M>>
      : (reqs: Iterable<In<M>> | AsyncIterable<In<M>>, opts?: CallOptions) => AsyncIterable<Out<M>>;

/** A client for one service: a method per RPC, plus `close()`. */
export type ServiceClient<T extends GenServiceMethods> = { [K in keyof T]: ClientMethod<T[K]> } & {
  close(): void;
};

function callMetadata(opts?: CallOptions): grpc.Metadata {
  const md = opts?.metadata?.clone() ?? new grpc.Metadata();
  injectTraceContext({ get: (k) => md.get(k)[0]?.toString(), set: (k, v) => md.set(k, v) });
  return md;
}

function callOptions(opts?: CallOptions): grpc.CallOptions {
  return opts?.timeoutMs === undefined ? {} : { deadline: Date.now() + opts.timeoutMs };
}

async function writeAll(
  call: grpc.ClientWritableStream<unknown>,
  reqs: Iterable<unknown> | AsyncIterable<unknown>,
): Promise<void> {
  for await (const r of reqs) {
    if (!call.write(r)) await new Promise((res) => call.once("drain", res));
  }
  call.end();
}

/** Creates a typed client for `service` at `address` (`host:port`), insecure (loopback / mesh mTLS). */
export function createGrpcClient<T extends GenServiceMethods>(
  service: GenService<T>,
  address: string,
  channelOptions: grpc.ChannelOptions = {},
): ServiceClient<T> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure(), channelOptions);
  const out: Record<string, unknown> = { close: () => client.close() };
  for (const m of (service as unknown as GenService<GenServiceMethods>).methods) {
    const path = `/${service.typeName}/${m.name}`;
    const ser = (v: unknown) => Buffer.from(toBinaryFast(m.input, create(m.input, v as never)));
    const de = (b: Buffer) => fromBinaryFast(m.output, b);
    switch (m.methodKind) {
      case "unary":
        out[m.localName] = (req: unknown, opts?: CallOptions) =>
          new Promise((resolve, reject) => {
            const call = client.makeUnaryRequest(
              path,
              ser,
              de,
              req,
              callMetadata(opts),
              callOptions(opts),
              (err, res) => (err ? reject(err) : resolve(res)),
            );
            opts?.signal?.addEventListener("abort", () => call.cancel(), { once: true });
          });
        break;
      case "client_streaming":
        out[m.localName] = (reqs: Iterable<unknown> | AsyncIterable<unknown>, opts?: CallOptions) =>
          new Promise((resolve, reject) => {
            const call = client.makeClientStreamRequest(
              path,
              ser,
              de,
              callMetadata(opts),
              callOptions(opts),
              (err, res) => (err ? reject(err) : resolve(res)),
            );
            opts?.signal?.addEventListener("abort", () => call.cancel(), { once: true });
            writeAll(call, reqs).catch((e: unknown) => {
              call.cancel();
              reject(e instanceof Error ? e : new Error(String(e)));
            });
          });
        break;
      case "server_streaming":
        out[m.localName] = (req: unknown, opts?: CallOptions) => {
          const call = client.makeServerStreamRequest(
            path,
            ser,
            de,
            req,
            callMetadata(opts),
            callOptions(opts),
          );
          opts?.signal?.addEventListener("abort", () => call.cancel(), { once: true });
          return call as AsyncIterable<unknown>;
        };
        break;
      case "bidi_streaming":
        out[m.localName] = (reqs: Iterable<unknown> | AsyncIterable<unknown>, opts?: CallOptions) => {
          const call = client.makeBidiStreamRequest(path, ser, de, callMetadata(opts), callOptions(opts));
          opts?.signal?.addEventListener("abort", () => call.cancel(), { once: true });
          writeAll(call, reqs).catch(() => call.cancel());
          return call as AsyncIterable<unknown>;
        };
        break;
    }
  }
  return out as ServiceClient<T>;
}
