/**
 * Clients for the standard gRPC health and reflection services, loaded from the
 * protos that grpc-health-check and @grpc/reflection ship; used by the dev
 * runner to wait for SERVING and by tests.
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const require = createRequire(import.meta.url);

export type ServingStatus =
  "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN" | "NOT_FOUND" | "UNAVAILABLE";

type GrpcCtor = new (
  address: string,
  creds: grpc.ChannelCredentials,
) => grpc.Client & Record<string, unknown>;

function load(protoFile: string, includeDir: string, path: string[]): GrpcCtor {
  const def = protoLoader.loadSync(protoFile, {
    includeDirs: [includeDir],
    keepCase: true,
    defaults: true,
    enums: String,
  });
  let node: unknown = grpc.loadPackageDefinition(def);
  for (const p of path) node = (node as Record<string, unknown>)[p];
  return node as GrpcCtor;
}

let healthCtor: GrpcCtor | undefined;
let reflectionCtor: GrpcCtor | undefined;

function healthClient(address: string) {
  healthCtor ??= (() => {
    const proto = join(
      dirname(require.resolve("grpc-health-check/package.json")),
      "proto/health/v1/health.proto",
    );
    return load(proto, dirname(proto), ["grpc", "health", "v1", "Health"]);
  })();
  return new healthCtor(address, grpc.credentials.createInsecure());
}

/** Asks `grpc.health.v1.Health/Check` for `service` ("" = the whole server). */
export function checkHealth(address: string, service = "", timeoutMs = 2000): Promise<ServingStatus> {
  const client = healthClient(address);
  return new Promise((resolve) => {
    const check = client.check as (
      req: { service: string },
      opts: grpc.CallOptions,
      cb: (err: grpc.ServiceError | null, res?: { status: ServingStatus }) => void,
    ) => void;
    check.call(client, { service }, { deadline: Date.now() + timeoutMs }, (err, res) => {
      client.close();
      if (err) resolve(err.code === grpc.status.NOT_FOUND ? "NOT_FOUND" : "UNAVAILABLE");
      else resolve(res?.status ?? "UNKNOWN");
    });
  });
}

/** Lists services and their methods through `grpc.reflection.v1.ServerReflection`. */
export async function listServicesByReflection(
  address: string,
  timeoutMs = 5000,
): Promise<Record<string, string[]>> {
  reflectionCtor ??= (() => {
    const root = join(dirname(require.resolve("@grpc/reflection/package.json")), "build/proto");
    return load(join(root, "grpc/reflection/v1/reflection.proto"), root, [
      "grpc",
      "reflection",
      "v1",
      "ServerReflection",
    ]);
  })();
  const client = new reflectionCtor(address, grpc.credentials.createInsecure());
  type Reply = {
    list_services_response?: { service: { name: string }[] };
    file_descriptor_response?: { file_descriptor_proto: Buffer[] };
    error_response?: { error_message: string };
  };
  const ask = (req: Record<string, string>): Promise<Reply> =>
    new Promise((resolve, reject) => {
      const info = client.ServerReflectionInfo as (
        opts: grpc.CallOptions,
      ) => grpc.ClientDuplexStream<unknown, Reply>;
      const call = info.call(client, { deadline: Date.now() + timeoutMs });
      call.once("data", (r: Reply) => {
        resolve(r);
        call.end();
      });
      call.once("error", reject);
      call.write(req);
    });
  try {
    const listed = await ask({ list_services: "" });
    const names = listed.list_services_response?.service.map((s) => s.name) ?? [];
    const { fromBinary } = await import("@bufbuild/protobuf");
    const { FileDescriptorProtoSchema } = await import("@bufbuild/protobuf/wkt");
    const out: Record<string, string[]> = {};
    for (const name of names) {
      const r = await ask({ file_containing_symbol: name });
      if (r.error_response) throw new Error(`reflection: ${name}: ${r.error_response.error_message}`);
      const files = (r.file_descriptor_response?.file_descriptor_proto ?? []).map((b) =>
        fromBinary(FileDescriptorProtoSchema, b),
      );
      out[name] = files.flatMap((f) =>
        f.service
          .filter((s) => `${f.package}.${s.name}` === name)
          .flatMap((s) => s.method.map((m) => m.name)),
      );
    }
    return out;
  } finally {
    client.close();
  }
}
