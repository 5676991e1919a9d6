/**
 * A grpc-js server built from protobuf-es service descriptors, with
 * `grpc.health.v1` health checking, server reflection, one span and one latency
 * observation per RPC, and W3C trace context read from the call metadata.
 */
import { toBinaryFast, fromBinaryFast } from "@kairos/contracts";
import * as grpc from "@grpc/grpc-js";
import { create, toBinary, type DescFile, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { HealthImplementation } from "grpc-health-check";
import { ReflectionService } from "@grpc/reflection";
import { context, SpanKind, trace, type Tracer } from "@opentelemetry/api";
import { extractTraceContext, recordSpanError } from "./telemetry.js";
import type { Metrics } from "./metrics.js";
import type { Logger } from "./logger.js";

type In<M> = M extends { input: infer I extends DescMessage } ? MessageShape<I> : never;
type Out<M> = M extends { output: infer O extends DescMessage } ? MessageInitShape<O> : never;

/** Per-call context handed to every handler. */
export interface CallContext {
  readonly metadata: grpc.Metadata;
  readonly signal: AbortSignal;
  readonly peer: string;
}

type Handler<M> = M extends { methodKind: "unary" }
  ? (req: In<M>, ctx: CallContext) => Promise<Out<M>> | Out<M>
  : M extends { methodKind: "server_streaming" }
    ? (req: In<M>, ctx: CallContext) => AsyncIterable<Out<M>>
    : M extends { methodKind: "client_streaming" }
      ? (reqs: AsyncIterable<In<M>>, ctx: CallContext) => Promise<Out<M>>
      : (reqs: AsyncIterable<In<M>>, ctx: CallContext) => AsyncIterable<Out<M>>;

/** The implementation of a service: one handler per method, typed from the descriptor. */
export type ServiceImpl<T extends GenServiceMethods> = { [K in keyof T]: Handler<T[K]> };

/** An error a handler throws to answer with a specific gRPC status. */
export class GrpcError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
    this.name = "GrpcError";
  }
}

/** Registration of one service implementation. */
export interface ServiceRegistration {
  readonly service: GenService<GenServiceMethods>;
  readonly impl: Record<string, unknown>;
}

/** Pairs a service descriptor with its typed implementation. */
export function implement<T extends GenServiceMethods>(
  service: GenService<T>,
  impl: ServiceImpl<T>,
): ServiceRegistration {
  return { service, impl };
}

function serializer(schema: DescMessage) {
  return (value: unknown) => Buffer.from(toBinaryFast(schema, create(schema, value as never)));
}
function deserializer(schema: DescMessage) {
  return (bytes: Buffer) => fromBinaryFast(schema, bytes);
}

/** A grpc-js service definition built from a protobuf-es descriptor. */
export function serviceDefinition(service: GenService<GenServiceMethods>): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const m of service.methods) {
    def[m.localName] = {
      path: `/${service.typeName}/${m.name}`,
      requestStream: m.methodKind === "client_streaming" || m.methodKind === "bidi_streaming",
      responseStream: m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming",
      requestSerialize: serializer(m.input),
      requestDeserialize: deserializer(m.input),
      responseSerialize: serializer(m.output),
      responseDeserialize: deserializer(m.output),
      originalName: m.name,
    };
  }
  return def;
}

function collectFiles(files: Iterable<DescFile>, seen = new Map<string, DescFile>()): Map<string, DescFile> {
  for (const f of files) {
    if (seen.has(f.name)) continue;
    seen.set(f.name, f);
    collectFiles(f.dependencies, seen);
  }
  return seen;
}

/** A proto-loader-style package definition from descriptors, as `@grpc/reflection` expects. */
function reflectionPackage(services: GenService<GenServiceMethods>[]) {
  const files = collectFiles(services.map((s) => s.file));
  const fileDescriptorProtos = [...files.values()].map((f) =>
    Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto)),
  );
  // @grpc/reflection reads only `fileDescriptorProtos` of each entry.
  return Object.fromEntries(
    services.map((s) => [
      s.typeName,
      { format: "Protocol Buffer 3 DescriptorProto", type: {}, fileDescriptorProtos },
    ]),
  ) as unknown as ConstructorParameters<typeof ReflectionService>[0];
}

function metadataCarrier(md: grpc.Metadata) {
  return {
    get: (k: string) => {
      const v = md.get(k)[0];
      return typeof v === "string" ? v : undefined;
    },
    set: (k: string, v: string) => md.set(k, v),
  };
}

function toServiceError(e: unknown): Partial<grpc.StatusObject> {
  if (e instanceof GrpcError) return { code: e.code, details: e.message };
  return { code: grpc.status.INTERNAL, details: e instanceof Error ? e.message : String(e) };
}

async function* readStream<T>(call: AsyncIterable<unknown>): AsyncIterable<T> {
  for await (const m of call) yield m as T;
}

/** What every kind of server call has. */
interface SurfaceCall {
  readonly metadata: grpc.Metadata;
  getPeer(): string;
  on(event: "cancelled", listener: () => void): unknown;
}

export interface GrpcServerOptions {
  service: string;
  host: string;
  port: number;
  registrations: ServiceRegistration[];
  tracer: Tracer;
  metrics: Metrics;
  logger: Logger;
}

export interface GrpcServer {
  readonly port: number;
  readonly address: string;
  readonly health: HealthImplementation;
  /** Marks every service SERVING (once the service's dependencies answer). */
  setServing(): void;
  /** Marks every service NOT_SERVING (at the start of shutdown). */
  setNotServing(): void;
  /** Stops accepting calls and waits for running ones, forcing after `graceMs`. */
  shutdown(graceMs: number): Promise<void>;
}

/** Starts a gRPC server for the given services; they answer health as NOT_SERVING until `setServing()`. */
export async function startGrpcServer(opts: GrpcServerOptions): Promise<GrpcServer> {
  const server = new grpc.Server({ "grpc.max_receive_message_length": 8 * 1024 * 1024 });
  const names = opts.registrations.map((r) => r.service.typeName);
  const health = new HealthImplementation(
    Object.fromEntries(["", ...names].map((n) => [n, "NOT_SERVING" as const])),
  );
  health.addToServer(server);
  new ReflectionService(reflectionPackage(opts.registrations.map((r) => r.service))).addToServer(server);

  for (const { service, impl } of opts.registrations) {
    const def = serviceDefinition(service);
    const handlers: grpc.UntypedServiceImplementation = {};
    for (const m of service.methods) {
      const fn = impl[m.localName];
      if (typeof fn !== "function") throw new Error(`${service.typeName}/${m.name} has no handler`);
      const method = `${service.typeName}/${m.name}`;
      const run = async <R>(call: SurfaceCall, body: (ctx: CallContext) => Promise<R>): Promise<R> => {
        const parent = extractTraceContext(metadataCarrier(call.metadata));
        const span = opts.tracer.startSpan(
          method,
          {
            kind: SpanKind.SERVER,
            attributes: { "rpc.system": "grpc", "rpc.service": service.typeName, "rpc.method": m.name },
          },
          parent,
        );
        const started = performance.now();
        // The signal and the peer are made only for a handler that reads them: an AbortController
        // per call, and the DOMException that aborting it builds, were a visible share of a busy
        // unary service's CPU (in the suppression benchmark grpc-js reported nearly every call cancelled).
        let abort: AbortController | undefined;
        let cancelled = false;
        call.on("cancelled", () => {
          cancelled = true;
          abort?.abort();
        });
        const ctx: CallContext = {
          metadata: call.metadata,
          get signal() {
            if (abort === undefined) {
              abort = new AbortController();
              if (cancelled) abort.abort();
            }
            return abort.signal;
          },
          get peer() {
            return call.getPeer();
          },
        };
        let code = grpc.status.OK;
        try {
          return await context.with(trace.setSpan(parent, span), () => body(ctx));
        } catch (e) {
          code = e instanceof GrpcError ? e.code : grpc.status.INTERNAL;
          span.setAttribute("rpc.grpc.status_code", code);
          if (code === grpc.status.INTERNAL) {
            recordSpanError(span, e);
            opts.logger.error({ err: e, method }, "rpc failed");
          }
          throw e;
        } finally {
          opts.metrics.rpcDuration.observe(
            { method, code: grpc.status[code] },
            (performance.now() - started) / 1000,
          );
          span.end();
        }
      };
      switch (m.methodKind) {
        case "unary":
          handlers[m.localName] = (
            call: grpc.ServerUnaryCall<unknown, unknown>,
            cb: grpc.sendUnaryData<unknown>,
          ) => {
            run(call, async (ctx) => (fn as (r: unknown, c: CallContext) => unknown)(call.request, ctx)).then(
              (res) => cb(null, res),
              (e: unknown) => cb(toServiceError(e)),
            );
          };
          break;
        case "client_streaming":
          handlers[m.localName] = (
            call: grpc.ServerReadableStream<unknown, unknown>,
            cb: grpc.sendUnaryData<unknown>,
          ) => {
            run(call, async (ctx) =>
              (fn as (r: AsyncIterable<unknown>, c: CallContext) => Promise<unknown>)(readStream(call), ctx),
            ).then(
              (res) => cb(null, res),
              (e: unknown) => cb(toServiceError(e)),
            );
          };
          break;
        case "server_streaming":
        case "bidi_streaming":
          handlers[m.localName] = (
            call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>,
          ) => {
            const input =
              m.methodKind === "bidi_streaming"
                ? readStream(call as AsyncIterable<unknown>)
                : (call as grpc.ServerWritableStream<unknown, unknown>).request;
            run(call, async (ctx) => {
              const out = (fn as (r: unknown, c: CallContext) => AsyncIterable<unknown>)(input, ctx);
              for await (const msg of out) {
                if (ctx.signal.aborted) break;
                if (!call.write(msg)) await new Promise((r) => call.once("drain", r));
              }
            }).then(
              () => call.end(),
              (e: unknown) => call.destroy(Object.assign(new Error("rpc failed"), toServiceError(e))),
            );
          };
          break;
      }
    }
    server.addService(def, handlers);
  }

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${opts.host}:${opts.port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    );
  });
  const setAll = (status: "SERVING" | "NOT_SERVING") => {
    for (const n of ["", ...names]) health.setStatus(n, status);
  };
  return {
    port,
    address: `${opts.host}:${port}`,
    health,
    setServing: () => setAll("SERVING"),
    setNotServing: () => setAll("NOT_SERVING"),
    shutdown: (graceMs) =>
      new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      }),
  };
}
